"""Which entries an input pattern matches, and whether each can be read: the one rule for local paths.

Local paths that an ``--input`` or ``--tfrecord`` glob matches or a manifest
lists go through one rule, ``entry_problem``: a regular file is read; a
dangling symbolic link, a link loop, an entry that cannot be examined or read
and a special file (FIFO, socket, device) become ``read`` failures with the
reason; a directory is skipped with a warning that counts them. Beam's own
local listing drops the first kinds without a word and would hang on reading
a FIFO, so local globs are listed here (``match_local``, with Beam's pattern
syntax); a Cloud Storage listing holds objects only, and goes through
``FileSystems.match``. Apart from the Beam steps of ``transforms.read``
because the launcher's checks (``pipeline.paths``) list inputs by the same
rule before any pipeline exists.
"""

import errno
import os
import re
import stat
from collections.abc import Callable, Iterator
from typing import NamedTuple

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from transforms.imaging.input_keys import SCHEME

DIRECTORY = "directory"  # entry_problem's answer for a directory: skipped, not failed
_SPECIAL_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
  (stat.S_ISFIFO, "FIFO"),
  (stat.S_ISSOCK, "socket"),
  (stat.S_ISCHR, "character device"),
  (stat.S_ISBLK, "block device"),
)


def entry_problem(path: str) -> str | None:
  """None for a local regular file to read, ``DIRECTORY``, or why the entry cannot be read (its failure message).

  The one rule for local entries, whether a glob matched them or a manifest
  lists them; decided from the entry itself (``stat``, ``lstat``), before
  anything opens it.
  """
  try:
    status = os.stat(path)
  except OSError as exc:
    if exc.errno == errno.ELOOP:
      return "symbolic link loop"
    if exc.errno == errno.ENOENT and os.path.islink(path):
      try:
        return f"dangling symbolic link to {os.readlink(path)}"
      except OSError:
        return "dangling symbolic link"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
      return "no such file"
    if exc.errno in (errno.EACCES, errno.EPERM):
      return "permission denied"
    return f"cannot examine the file: {exc.strerror or exc}"
  if stat.S_ISDIR(status.st_mode):
    return DIRECTORY
  if not stat.S_ISREG(status.st_mode):
    kind = next((name for test, name in _SPECIAL_KINDS if test(status.st_mode)), "special file")
    return f"not a regular file ({kind})"
  if not os.access(path, os.R_OK):
    return "permission denied"
  return None


def error_type(problem: str) -> str:
  """The failure record's ``error_type`` for an ``entry_problem`` message."""
  for start, name in (
    ("dangling", "DanglingSymlink"),
    ("symbolic link loop", "SymlinkLoop"),
    ("not a regular file", "NotARegularFile"),
    ("permission", "PermissionDenied"),
    ("no such file", "FileNotFound"),
    ("cannot list", "UnlistableDirectory"),
  ):
    if problem.startswith(start):
      return name
  return "UnreadableEntry"


class Entry(NamedTuple):
  """A path a pattern matched, and what to do with it: ``problem`` None (read), ``DIRECTORY`` or a failure reason."""

  path: str
  problem: str | None


def is_local(path: str) -> bool:
  return not SCHEME.match(path)


def _depth_rule(rest: str) -> tuple[list[re.Pattern[str]], int | None]:
  """(component regexes, index from which any depth can match or None) of a pattern below its listed folder.

  ``**``, ``?`` and ``[...]`` can match ``/`` in Beam's syntax, so from the
  first component holding one, any folder may hold matches.
  """
  parts = rest.split("/")
  free = next((i for i, part in enumerate(parts) if "**" in part or "?" in part or "[" in part), None)
  return [re.compile(FileSystem.translate_pattern(part)) for part in parts], free


def match_local(pattern: str) -> Iterator[Entry]:
  """Every local entry ``pattern`` matches, with its ``entry_problem``; Beam's pattern syntax.

  Like Beam's local listing it lists from the folder before the first
  wildcard and does not follow symbolic links to folders, but it keeps what
  Beam drops (dangling links, loops, special files, folders) for
  ``entry_problem`` to judge, and only walks folders that can hold matches.
  A folder below the first that cannot be listed and could hold matches is
  a failure too; the first one raises its ``OSError``, as the pattern then
  matches nothing that can be judged.
  A matched folder is reported (``DIRECTORY``) when the walk does not read
  what is below it.
  """
  found_prefix = re.match(r"^[^[*?]*", pattern)
  prefix = found_prefix.group(0) if found_prefix else ""
  if prefix == pattern:
    if os.path.lexists(pattern):
      yield Entry(pattern, entry_problem(pattern))
    else:
      yield Entry(pattern, "no such file")
    return
  top = os.path.dirname(prefix)
  regex = re.compile(FileSystem.translate_pattern(pattern))
  parts, free = _depth_rule(pattern[len(top) :].lstrip("/"))

  def descends(depth: int, name: str) -> bool:
    if free is not None and depth >= free:
      return True
    return depth < len(parts) - 1 and parts[depth].match(name) is not None

  stack = [(top, 0)]
  while stack:
    folder, depth = stack.pop()
    try:
      with os.scandir(folder) as listing:
        found = sorted(listing, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):  # not there (any more): nothing to match in it
      continue
    except OSError as exc:
      if folder == top:
        raise
      yield Entry(folder, f"cannot list the folder: {(exc.strerror or str(exc)).lower()}")
      continue
    for entry in found:
      path = os.path.join(folder, entry.name)
      try:
        real_dir = entry.is_dir(follow_symlinks=False)
      except OSError:
        real_dir = False
      walk = real_dir and descends(depth, entry.name)
      if walk:
        stack.append((path, depth + 1))
      if regex.match(path) is None:
        continue
      if real_dir:
        if not walk:
          yield Entry(path, DIRECTORY)
        continue
      yield Entry(path, entry_problem(path))


def match_entries(pattern: str) -> list[Entry]:
  """``match_local`` for a local pattern; else the object listing (folder placeholders ending in '/' dropped)."""
  if is_local(pattern):
    return list(match_local(pattern))
  results = FileSystems.match([pattern])
  return [Entry(m.path, None) for result in results for m in result.metadata_list if not m.path.endswith("/")]
