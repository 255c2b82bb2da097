"""Paths under OUT and the write that never leaves half a file, local or gs://.

Every output is written whole or not at all (``write_atomically``): a local
file goes to a temporary name on the same file system and is renamed into
place, so a kill or a full disk leaves either the old file or the new one,
and a write that fails removes its temporary file. On Cloud Storage an
object only appears when its upload is finalised and a failed upload is
cancelled, so one object write is already atomic and needs no rename (a
rename there is a copy and a delete). ``atomic_write`` keeps the temporary
files of the outputs under ``OUT/.tmp/`` (``transforms.leftovers`` removes
what a killed run left there), and ``remove_temp_dir`` drops that folder
after a run. Shared by the sinks (``transforms.sinks``,
``transforms.record_files``), the report and the launcher's later rewrites
of summary.json and evaluation.json.

A write that fails for a reason no retry of one image can fix (disk full,
quota, permissions, an I/O error) raises ``OutputError``, which the sinks
let stop the run; ``describe_output_error`` turns it, however deep Beam has
wrapped it, into the one line the launcher prints.
"""

import errno
import logging
import os
import uuid
from typing import Iterator, Optional, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

from transforms.imaging.records import FAILURES_DIR, STATS_DIR, SUMMARY_FILE

_LOG = logging.getLogger(__name__)
TEMP_DIR = ".tmp"

# What each resource errno means for the user: the cause, and what to do before a re-run.
_FREE_SPACE = "free space or choose another --output"
_WRITE_ACCESS = "give the run write access to it"
RESOURCE_ERRNOS = {
  errno.ENOSPC: ("no space left on device", _FREE_SPACE),
  errno.EDQUOT: ("disk quota exceeded", _FREE_SPACE),
  errno.EFBIG: ("file too large for the file system", "choose another --output"),
  errno.EACCES: ("permission denied", _WRITE_ACCESS),
  errno.EPERM: ("operation not permitted", _WRITE_ACCESS),
  errno.EROFS: ("read-only file system", "choose a writable --output"),
  errno.EIO: ("input/output error", "check the storage device"),
}
# Cloud Storage answers a lost permission, an exhausted quota or a rate limit with these HTTP codes.
_HTTP_CAUSES = {
  401: ("credentials rejected by Cloud Storage (HTTP 401)", "renew the credentials"),
  403: ("permission denied by Cloud Storage (HTTP 403)", "grant the run's account write access to the bucket"),
  429: ("Cloud Storage quota or rate limit exceeded (HTTP 429)", "wait or raise the quota"),
  507: ("Cloud Storage has no space left (HTTP 507)", "free space in the bucket"),
}
# Errors no read can raise: whatever file they name was being written.
_WRITE_ONLY_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
# Beam's file sinks name no path in their errors; the step that failed names the folder.
_STEPS = (("WriteStats", STATS_DIR + "/"), ("WriteFailures", FAILURES_DIR + "/"), ("WriteSummary", SUMMARY_FILE))


class OutputError(OSError):
  """A write under OUT that failed: ``errno``, ``strerror`` and the final ``filename`` it was writing."""


class OutputFailed(Exception):
  """The run stopped because an output could not be written; ``str()`` is the launcher's one line."""


def join(base: str, *parts: str) -> str:
  return FileSystems.join(base.rstrip("/"), *parts)


def is_local(path: str) -> bool:
  return isinstance(FileSystems.get_filesystem(path), LocalFileSystem)


def _write_local(path: str, data: bytes, temp: str) -> None:
  """Temp file on the same file system, then ``os.replace``; a failed write removes its temp file."""
  folder = os.path.dirname(temp) or "."
  try:
    os.makedirs(folder, exist_ok=True)
    try:
      handle = open(temp, "wb")
    except FileNotFoundError:  # the temp folder was removed meanwhile (an empty OUT/.tmp is dropped)
      os.makedirs(folder, exist_ok=True)
      handle = open(temp, "wb")
  except OSError as exc:
    raise OutputError(exc.errno, exc.strerror, path) from exc
  try:
    with handle:
      handle.write(data)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.replace(temp, path)
  except OSError as exc:
    try:
      os.unlink(temp)
    except OSError:
      pass
    raise OutputError(exc.errno, exc.strerror, path) from exc


def write_atomically(
  path: str, data: bytes, mime_type: str = "application/octet-stream", temp_dir: str | None = None
) -> None:
  """Writes ``data`` to ``path`` whole or not at all.

  Local: through a temporary file in ``temp_dir`` (default: beside ``path``,
  named ``.<name>.<hex>.tmp``), renamed into place. Object stores without
  directories (gs://): one object write, cancelled if it fails. Others
  (with directories, no atomic single write): temporary file and Beam's rename.
  """
  name = uuid.uuid4().hex
  if is_local(path):
    if temp_dir is None:
      folder, base = os.path.split(path)
      temp = os.path.join(folder, f".{base}.{name}.tmp")
    else:
      temp = os.path.join(temp_dir, name)
    _write_local(path, data, temp)
    return
  try:
    if not FileSystems.get_filesystem(path).has_dirs():
      with FileSystems.create(path, mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)
      return
    temp = join(temp_dir, name) if temp_dir else f"{path}.{name}.tmp"
    with FileSystems.create(temp, mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
      handle.write(data)
    FileSystems.rename([temp], [path])
  except Exception as exc:
    cause = resource_cause(exc)
    if cause is not None:
      raise OutputError(cause[0], cause[2], path) from exc
    raise


def atomic_write(output: str, path: str, data: bytes, mime_type: str = "application/octet-stream") -> None:
  """Writes ``data`` to ``path`` under ``output`` whole or not at all; local temporary files go to OUT/.tmp/."""
  write_atomically(path, data, mime_type, temp_dir=join(output, TEMP_DIR))


def remove_temp_dir(output: str) -> None:
  """Drops OUT/.tmp once this run's writes are done.

  Locally only an empty one: a failed write removes its own temporary file,
  a killed run's are removed by the next run's ``remove_leftovers``, and
  whatever is still there belongs to a forced concurrent run mid-write.
  """
  temp = join(output, TEMP_DIR)
  if is_local(temp):
    discard_empty_temp_dir(output)
    return
  try:
    if FileSystems.match([temp + "/*"])[0].metadata_list:
      FileSystems.delete([temp + "/"])
  except Exception as exc:  # a left-over temp dir is not worth failing a finished run
    _LOG.warning("could not remove %s: %s", temp, exc)


def discard_empty_temp_dir(output: str) -> None:
  """Removes OUT/.tmp if it is empty (a write after ``remove_temp_dir`` recreates it locally)."""
  temp = join(output, TEMP_DIR)
  if is_local(temp):
    try:
      os.rmdir(temp)
    except OSError:
      pass


def _chain(exc: BaseException) -> Iterator[BaseException]:
  """``exc``, its causes and contexts, and the per-file errors of a Beam ``BeamIOError``, each once."""
  seen: set[int] = set()
  stack: list[BaseException | None] = [exc]
  while stack:
    current = stack.pop()
    if current is None or id(current) in seen:
      continue
    seen.add(id(current))
    yield current
    details = getattr(current, "exception_details", None)
    if isinstance(details, dict):
      stack.extend(value for value in details.values() if isinstance(value, BaseException))
    stack.extend((current.__context__, current.__cause__))


def _http_code(exc: BaseException) -> Optional[int]:
  """The HTTP status of a Google API client error (``google.api_core.exceptions``), else None."""
  if not type(exc).__module__.startswith("google."):
    return None
  code = getattr(exc, "code", None)
  return code if isinstance(code, int) else None


def _resource_error(exc: BaseException) -> Optional[Tuple[BaseException, int, Optional[str], str, str]]:
  """(the error, errno, path or None, cause, what to do) for the first resource error in ``exc``'s chain, or None."""
  for error in _chain(exc):
    if isinstance(error, OSError) and error.errno in RESOURCE_ERRNOS:
      cause, hint = RESOURCE_ERRNOS[error.errno]
      return error, error.errno, error.filename, cause, hint
    code = _http_code(error)
    if code in _HTTP_CAUSES:
      cause, hint = _HTTP_CAUSES[code]
      if code == 403 and "quota" in str(error).lower():
        cause, hint = "Cloud Storage quota exceeded (HTTP 403)", "wait or raise the quota"
      return error, (errno.EDQUOT if code in (429, 507) else errno.EACCES), None, cause, hint
  return None


def resource_cause(exc: BaseException) -> Optional[Tuple[int, Optional[str], str, str]]:
  """(errno, path or None, cause, what to do) when ``exc`` or what it wraps is a resource error, else None."""
  found = _resource_error(exc)
  return found and found[1:]


def is_resource_error(exc: BaseException) -> bool:
  return _resource_error(exc) is not None


def describe_output_error(exc: BaseException, output: str | None = None) -> Optional[str]:
  """The launcher's one line for a run stopped by a resource error while writing, or None for any other error.

  Names the file being written, or, for Beam's stats and failures sinks,
  which name none, the folder of the step that failed. A permission or I/O
  error on a file outside OUT (reading an input, say) is not a write's, and
  gets None, as does a Cloud Storage refusal outside the writing steps.
  """
  found = _resource_error(exc)
  if found is None:
    return None
  error, code, path, cause, hint = found
  text = " ".join(str(item) for item in _chain(exc))
  folder = next((part for step, part in _STEPS if step in text), None)
  inside = bool(output and path and str(path).startswith(output.rstrip("/") + "/"))
  if isinstance(error, OutputError) or inside:
    pass
  elif path is not None:
    if code not in _WRITE_ONLY_ERRNOS:
      return None
  elif folder is not None:
    path = join(output, folder) if output else folder
  elif code in _WRITE_ONLY_ERRNOS and _http_code(error) is None:
    path = output or "the output"
  else:
    return None
  rerun = ", then re-run (with --skip_existing to keep the masks already written)" if output else ""
  return f"cannot write {path}: {cause}; {hint}{rerun}."


class QuietResourceErrors(logging.Filter):
  """Drops log records that carry a resource error's traceback (Beam logs one for each failed step).

  The launcher prints the error as one line instead; install it on the
  handlers that write to the terminal.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    exc_info = record.exc_info
    return not (exc_info and exc_info[1] is not None and is_resource_error(exc_info[1]))
