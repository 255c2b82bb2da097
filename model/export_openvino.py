"""``python -m model.export_openvino``: the command's entry point only; its usage (``--help``) and code are ``model.artifact.export_openvino``."""

import sys

from model.artifact.export_openvino import main

if __name__ == "__main__":
  sys.exit(main())
