"""The error a bad invocation raises: the launcher prints its message and exits 2 before any work."""

import argparse
from typing import NoReturn


class OptionsError(ValueError):
  """A bad invocation; the message is meant for the person who typed it."""


def command_parser(module: str, doc: str, error: type[Exception] = OptionsError) -> argparse.ArgumentParser:
  """The parser of ``python -m module``, described by doc's first paragraph; a bad invocation raises error(message)."""

  class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
      raise error(message)

  return _Parser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
