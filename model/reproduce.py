"""``python -m model.reproduce``: the command's entry point only; its usage (``--help``) and code are ``model.artifact.reproduce``."""

from model.artifact.reproduce import main

if __name__ == "__main__":
  main()
