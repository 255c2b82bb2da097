"""Pipeline options, graph assembly and the entry point (python -m pipeline.run)."""
