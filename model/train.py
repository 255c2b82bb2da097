"""``python -m model.train``: the command's entry point only; its usage (``--help``) and code are ``model.training.train``."""

from model.training.train import main

if __name__ == "__main__":
  main()
