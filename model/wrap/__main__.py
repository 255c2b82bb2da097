"""``python -m model.wrap``: the command's entry point only; its usage (``--help``) and code are ``model.wrap.cli``."""

from model.wrap.cli import main

if __name__ == "__main__":
  main()
