"""``python -m model.quantize``: the command's entry point only; its usage (``--help``) and code are ``model.artifact.quantize``."""

import sys

from model.artifact.quantize import main

if __name__ == "__main__":
  sys.exit(main())
