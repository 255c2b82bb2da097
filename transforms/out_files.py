"""Paths under OUT and the write that never leaves half a file, through Beam's FileSystems (local or gs://).

Every output is written to ``OUT/.tmp/`` and renamed into place
(``atomic_write``), so a file either exists complete or not at all, and
``remove_temp_dir`` drops what interrupted writes left there. Shared by the
sinks (``transforms.sinks``, ``transforms.record_files``) and by the
launcher's later rewrites of summary.json and evaluation.json.
"""

import logging
import os
import shutil
import uuid

from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

_LOG = logging.getLogger(__name__)
TEMP_DIR = ".tmp"


def join(base: str, *parts: str) -> str:
  return FileSystems.join(base.rstrip("/"), *parts)


def _ensure_parent(path: str):
  """Object stores have no directories; a local rename needs the parent to exist."""
  if isinstance(FileSystems.get_filesystem(path), LocalFileSystem):
    os.makedirs(os.path.dirname(path), exist_ok=True)


def atomic_write(output: str, path: str, data: bytes, mime_type: str = "application/octet-stream"):
  """Writes ``data`` to a temporary object under OUT/.tmp, then renames it to ``path``."""
  temp = join(output, TEMP_DIR, uuid.uuid4().hex)
  with FileSystems.create(temp, mime_type=mime_type) as handle:
    handle.write(data)
  _ensure_parent(path)
  FileSystems.rename([temp], [path])


def remove_temp_dir(output: str):
  """Drops OUT/.tmp (left-overs of interrupted writes are never valid outputs)."""
  temp = join(output, TEMP_DIR)
  if isinstance(FileSystems.get_filesystem(temp), LocalFileSystem):
    shutil.rmtree(temp, ignore_errors=True)
    return
  try:
    if FileSystems.match([temp + "/*"])[0].metadata_list:
      FileSystems.delete([temp + "/"])
  except Exception as exc:  # a left-over temp dir is not worth failing a finished run
    _LOG.warning("could not remove %s: %s", temp, exc)
