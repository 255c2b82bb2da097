"""``python -m model.nuclei_data``: the command's entry point only; its usage (``--help``) and code are ``model.data.nuclei_data``."""

import sys

from model.data.nuclei_data import main

if __name__ == "__main__":
  sys.exit(main())
