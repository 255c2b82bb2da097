"""``python -m model.make_splits``: the command's entry point only; its usage (``--help``) and code are ``model.data.make_splits``."""

import sys

from model.data.make_splits import main

if __name__ == "__main__":
  sys.exit(main())
