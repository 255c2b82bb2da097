"""``python -m model.export``: the command's entry point only; its usage (``--help``) and code are ``model.artifact.export``."""

from model.artifact.export import main

if __name__ == "__main__":
  main()
