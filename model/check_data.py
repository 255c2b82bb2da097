"""``python -m model.check_data``: the command's entry point only; its usage (``--help``) and code are ``model.data.check_data``."""

import sys

from model.data.check_data import main

if __name__ == "__main__":
  sys.exit(main())
