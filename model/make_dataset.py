"""``python -m model.make_dataset``: the command's entry point only; its usage (``--help``) and code are ``model.data.make_dataset``."""

from model.data.make_dataset import main

if __name__ == "__main__":
  main()
