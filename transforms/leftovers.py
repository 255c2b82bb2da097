"""Removes what killed runs left in OUT: Beam's ``beam-temp-*`` sink folders and the files in ``OUT/.tmp/``.

A run killed before its file sinks finalise leaves
``OUT/stats/beam-temp-<prefix>-<uuid>/`` and ``OUT/failures/beam-temp-…/``
(Beam's ``FileBasedSink`` names them so), and one killed during a write leaves
``OUT/.tmp/<uuid>`` (``transforms.out_files.atomic_write``). None of them is
ever an output, and nothing else removes them, so the next run into OUT does,
after it holds OUT's lock (a live run's temporary files look the same). Only
names of exactly these forms are touched; anything else in OUT stays.
"""

import logging
import os
import re
import shutil
from typing import List, NamedTuple

from apache_beam.io.filesystems import FileSystems

from transforms.imaging.records import FAILURES_DIR, STATS_DIR
from transforms.out_files import TEMP_DIR, is_local, join

_LOG = logging.getLogger(__name__)
# FileBasedSink._create_temp_dir: 'beam-temp-' + the prefix's last component + '-' + uuid1().hex.
BEAM_TEMP = re.compile(r"^beam-temp-.+-[0-9a-f]{32}$")
# atomic_write: uuid4().hex.
ATOMIC_TEMP = re.compile(r"^[0-9a-f]{32}$")
SINK_FOLDERS = ("", STATS_DIR, FAILURES_DIR)


class Leftovers(NamedTuple):
  """What ``remove_leftovers`` removed: Beam temp folders and OUT/.tmp files."""

  folders: int = 0
  files: int = 0

  @property
  def total(self) -> int:
    return self.folders + self.files

  def describe(self, output: str) -> str:
    """'removed 2 beam-temp folders and 1 temporary file left in OUT by an interrupted run'."""
    parts = []
    if self.folders:
      parts.append(f"{self.folders} beam-temp folder{'s' if self.folders != 1 else ''}")
    if self.files:
      parts.append(f"{self.files} temporary file{'s' if self.files != 1 else ''} in {TEMP_DIR}/")
    return f"Removed {' and '.join(parts)} left in {output} by an interrupted run"


def _local(output: str) -> Leftovers:
  folders = files = 0
  for sub in SINK_FOLDERS:
    folder = os.path.join(output, sub) if sub else output
    try:
      with os.scandir(folder) as listing:
        names = [entry.name for entry in listing if entry.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
      continue
    for name in names:
      if BEAM_TEMP.match(name):
        shutil.rmtree(os.path.join(folder, name))
        folders += 1
  temp = os.path.join(output, TEMP_DIR)
  try:
    with os.scandir(temp) as listing:
      names = [entry.name for entry in listing if not entry.is_dir(follow_symlinks=False)]
  except (FileNotFoundError, NotADirectoryError):
    return Leftovers(folders, files)
  for name in names:
    if ATOMIC_TEMP.match(name):
      os.unlink(os.path.join(temp, name))
      files += 1
  try:
    os.rmdir(temp)
  except OSError:  # not empty: it holds something this module does not own
    pass
  return Leftovers(folders, files)


def _relative_names(base: str, paths: List[str]) -> List[str]:
  return [path[len(base) :] for path in paths if path.startswith(base)]


def _object_store(output: str) -> Leftovers:
  """Object stores list objects, not folders: a temp folder is the objects under its name."""
  folders = 0
  doomed: list[str] = []
  for sub in SINK_FOLDERS:
    base = join(output, sub) + "/" if sub else output.rstrip("/") + "/"
    found = FileSystems.match([base + "beam-temp-**"])[0].metadata_list
    names: dict[str, list[str]] = {}
    for relative, meta in zip(_relative_names(base, [m.path for m in found]), found):
      name = relative.split("/", 1)[0]
      if "/" in relative and BEAM_TEMP.match(name):
        names.setdefault(name, []).append(meta.path)
    folders += len(names)
    doomed += [path for paths in names.values() for path in paths]
  base = join(output, TEMP_DIR) + "/"
  found = [m.path for m in FileSystems.match([base + "*"])[0].metadata_list]
  files = [base + name for name in _relative_names(base, found) if ATOMIC_TEMP.match(name)]
  if doomed or files:
    FileSystems.delete(doomed + files)
  return Leftovers(folders, len(files))


def remove_leftovers(output: str) -> Leftovers:
  """Removes the temporary folders and files killed runs left in ``output``; returns how many.

  Call it only while holding OUT's lock: a run in progress has temporary
  files of the same names.
  """
  return _local(output) if is_local(output) else _object_store(output)
