"""``python -m model.ablation``: the command's entry point only; its usage (``--help``) and code are ``model.ablation.cli``."""

from model.ablation.cli import main

if __name__ == "__main__":
  main()
