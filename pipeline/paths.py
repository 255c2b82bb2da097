"""Paths as the flags give them: local or with a scheme (gs://), made absolute, globbed and probed.

Shared by the run's checks (``pipeline.checks``), ``python -m
pipeline.evaluate`` and the drift check (``pipeline.drift``), so that the
three read a path the same way and refuse a bad one with the same words.
"""

import os
import re
import shutil
import tempfile
from typing import List, Sequence

from pipeline.errors import OptionsError
from transforms.read import match_entries

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_local(path: str) -> bool:
  return not _SCHEME.match(path)


def absolute(path: str) -> str:
  return os.path.abspath(os.path.expanduser(path)) if is_local(path) else path


def as_glob(path: str) -> str:
  """A directory given as --input means every file below it."""
  if path.endswith("/") or (is_local(path) and os.path.isdir(path)):
    return path.rstrip("/") + "/**"
  return path


def matching_files(pattern: str) -> List[str]:
  """The files ``pattern`` matches that a run would read, by the rule the run's reader uses (``transforms.read``).

  Locally that leaves out directories, dangling links, link loops, special
  and unreadable files (which a run records as ``read`` failures).
  """
  try:
    entries = match_entries(pattern)
  except Exception as exc:  # the file systems raise many types (credentials, buckets, bad patterns)
    raise OptionsError(f"cannot list {pattern!r}: {exc}") from None
  return [entry.path for entry in entries if entry.problem is None]


def check_writable(output: str) -> None:
  """A local --output must be creatable and writable, or the run would fail after start-up with a traceback.

  Tries a temporary directory in the output (or its nearest existing parent)
  and removes it again, so a refused invocation leaves nothing behind.
  """
  existing = output
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  try:
    shutil.rmtree(tempfile.mkdtemp(prefix=".deconvseg-write-check-", dir=existing))
  except OSError as exc:
    raise OptionsError(
      f"cannot write to --output {output}: {exc.strerror or exc} (in {existing}). Choose a directory you can write to."
    ) from None


def check_truth(patterns: Sequence[str]) -> None:
  """Every --truth pattern matches files, and no two truth files claim the same image."""
  from transforms.truth import truth_stem

  seen: dict[str, str] = {}
  for pattern in patterns:
    paths = matching_files(pattern)
    if not paths:
      raise OptionsError(
        f"--truth {pattern!r} matches no files; check the path (and quote the pattern so the shell does not expand it)."
      )
    for path in paths:
      stem = truth_stem(path, pattern)
      if seen.setdefault(stem, path) != path:
        raise OptionsError(
          f"--truth files {seen[stem]} and {path} both match images keyed {stem!r} (keys are "
          "compared without extension); keep one truth mask per image."
        )
