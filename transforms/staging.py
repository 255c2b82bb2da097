"""Local copies of remote directories (the exported model), and ranged readers, through Beam's filesystems.

TensorFlow reads ``gs://`` with its own C++ client, which ignores
``STORAGE_EMULATOR_HOST`` and always dials storage.googleapis.com, so a model
on the emulator cannot be loaded with ``tf.saved_model.load("gs://...")``.
Copying the directory with Beam's ``FileSystems`` first works everywhere the
rest of the pipeline's I/O works (Cloud Storage, the emulator, any Beam
filesystem), and on Dataflow each worker VM downloads the model once instead
of every load streaming it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
from typing import IO, Any

from apache_beam.io.filesystems import FileSystems

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_LOCK = threading.Lock()


def is_remote(path: str) -> bool:
  return bool(_SCHEME.match(path)) and not path.startswith("file://")


_GCS: list[Any] = []  # the process's one gcsio.GcsIO client, made on the first gs:// read


def open_for_reading(path: str, read_ahead: int) -> IO[bytes]:
  """A seekable binary reader of ``path``; on Cloud Storage with ``read_ahead`` bytes of read-ahead.

  Beam's default buffer downloads 16 MiB at every seek, where a reader of one
  range (a TFRecord record's image, a GeoTIFF window) needs only that range.
  One GcsIO client per process serves every such reader.
  """
  if path.startswith("gs://"):
    if not _GCS:
      from apache_beam.io.gcp import gcsio  # only gs:// reads need the Cloud Storage client

      _GCS.append(gcsio.GcsIO())
    return _GCS[0].open(path, "rb", read_buffer_size=max(1, read_ahead))
  return FileSystems.open(path, compression_type="uncompressed")


def local_copy(directory: str, cache_root: str | None = None) -> str:
  """A local directory with the same files as ``directory``; local paths come back unchanged.

  The copy lives under ``cache_root`` (default: the system temp dir) in a folder
  named after the URI and the files' sizes and modification times, so a changed
  model is fetched again while repeated loads (threads, processes, bundles on
  the same VM) reuse one copy. It is written to a temporary sibling and renamed
  into place, so a reader never sees a half-copied model.
  """
  if not is_remote(directory):
    return directory
  root = directory.rstrip("/")
  found = FileSystems.match([root + "/**"])[0].metadata_list
  files = sorted((m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in found if not m.path.endswith("/"))
  if not files:
    raise ValueError(f"{directory} is empty or does not exist.")
  fingerprint = hashlib.sha256(repr((root, files)).encode("utf-8")).hexdigest()[:20]
  cache_root = cache_root or os.path.join(tempfile.gettempdir(), "deconvseg-staged")
  target = os.path.join(cache_root, fingerprint)
  with _LOCK:
    if os.path.isdir(target):
      return target
    os.makedirs(cache_root, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=fingerprint + ".partial-", dir=cache_root)
    try:
      for path, _, _ in files:
        relative = path[len(root) + 1 :]
        destination = os.path.join(partial, *relative.split("/"))
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with FileSystems.open(path, compression_type="uncompressed") as source, open(destination, "wb") as sink:
          shutil.copyfileobj(source, sink, length=8 << 20)
      try:
        os.rename(partial, target)
      except OSError:
        if not os.path.isdir(target):  # not another process winning the race
          raise
    finally:
      if os.path.isdir(partial):
        shutil.rmtree(partial, ignore_errors=True)
  return target
