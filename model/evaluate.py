"""``python -m model.evaluate``: the command's entry point only; its usage (``--help``) and code are ``model.training.evaluate``."""

from model.training.evaluate import main

if __name__ == "__main__":
  main()
