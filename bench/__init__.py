"""Benchmarks of the segmentation pipeline against the model's ceiling and the alternatives.

    python -m bench [--quick] [--out docs/PERFORMANCE.md | results.json]

See ``bench.run`` for what is measured and ``docs/PERFORMANCE.md`` for results.
"""
