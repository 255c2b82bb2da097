"""OUT's lock (``OUT/.deconvseg.lock``): one run per output folder, taken atomically, stale ones taken over.

Apart from ``pipeline.run_state`` (the folder's state file and clean stops)
because taking a lock that two runs may race for is a protocol of its own:
locally the lock is created with ``O_CREAT | O_EXCL``; on ``gs://`` it is one
object written with the precondition ``if_generation_match=0`` (or the
generation of the stale lock it replaces), so of two runs starting together
exactly one gets it. A lock whose run is gone (a dead pid on this host) or
older than ``--lock_max_age_hours`` is taken over with a log line;
``--force_unlock`` takes over any lock. The lock holds the run's record, the
same one ``run_state.json`` holds.
"""

import datetime
import json
import logging
import os
import socket
import time
import uuid
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipeline.errors import OptionsError
from transforms.out_files import join

_LOG = logging.getLogger("deconvseg")
LOCK_FILE = ".deconvseg.lock"
DEFAULT_LOCK_MAX_AGE_HOURS = 24.0
_UNREADABLE_LOCK_GRACE_S = 30.0  # a lock file still being written by the run that created it


def _age_hours(record: dict[str, Any]) -> float:
  try:
    started = datetime.datetime.strptime(str(record.get("started")), "%Y-%m-%dT%H:%M:%SZ")
  except ValueError:
    return float("inf")
  started = started.replace(tzinfo=datetime.timezone.utc)
  return (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 3600


def pid_alive(pid: Any) -> bool:
  """Whether a process with this id exists on this machine (one owned by another user counts)."""
  try:
    pid = int(pid)
  except (TypeError, ValueError):
    return False
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def is_live(record: dict[str, Any], max_age_hours: float = DEFAULT_LOCK_MAX_AGE_HOURS) -> bool:
  """Whether the run a lock or state record names may still be running.

  A process on another host cannot be probed, so only age retires it.
  """
  if _age_hours(record) > max_age_hours:
    return False
  if record.get("host") == socket.gethostname():
    return pid_alive(record.get("pid"))
  return True


def describe(record: dict[str, Any]) -> str:
  return f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started')}"


def read_record(path: str) -> dict[str, Any] | None:
  """The parsed object at ``path`` (a lock or state record); None when it does not exist or holds no JSON object."""
  try:
    with FileSystems.open(path, compression_type="uncompressed") as handle:
      value = json.loads(handle.read().decode("utf-8"))
  except Exception:
    return None
  return value if isinstance(value, dict) else None


class FolderLock:
  """OUT's lock as one run holds it: ``take`` it, ask whether the run still ``holds`` it, ``release`` it."""

  def __init__(self, output: str, pipeline_options: Any = None) -> None:
    self.output = output
    self.path = join(output, LOCK_FILE)
    self._options = pipeline_options
    self._held: str | tuple[Any, int] | None = None  # what release() needs: a local path or (blob, generation)
    # --force_unlock over a run that still looked alive: its temporaries must not be cleaned away
    self.shares_folder = False

  def take(self, data: bytes, force: bool, max_age_hours: float) -> None:
    """Writes ``data`` (the run's record) as OUT's lock; OptionsError when another live run holds it."""
    if self.output.startswith("gs://"):
      self._take_gcs(data, force, max_age_hours)
    elif "://" not in self.output:
      self._take_local(data, force, max_age_hours)
    else:
      _LOG.warning(
        "no lock for %s (only local folders and gs:// are locked); two runs into it would collide", self.path
      )

  def holds(self, run_id: str) -> bool:
    """False when a --force_unlock run took the lock: the folder's state is that run's to write now."""
    lock = self._held
    if lock is None:  # a scheme without locks
      return True
    if isinstance(lock, str):
      return (read_record(lock) or {}).get("run_id") == run_id
    blob, generation = lock
    current = blob.bucket.get_blob(blob.name)
    return current is not None and current.generation == generation

  def _refuse(self, other: dict[str, Any]) -> None:
    raise OptionsError(
      f"another run is writing to {self.output} ({describe(other)}; lock {self.path}); wait for it to finish, "
      "or pass --force_unlock if that run is gone"
    )

  def _take_over(self, other: dict[str, Any] | None, force: bool, max_age_hours: float) -> None:
    """Refuses a live holder unless forced; logs the take-over of any other."""
    if other is not None and is_live(other, max_age_hours):
      if not force:
        self._refuse(other)
      self.shares_folder = True
    why = "--force_unlock" if force else "its run is gone or older than --lock_max_age_hours"
    _LOG.warning(
      "taking over the lock %s of %s (%s)", self.path, describe(other) if other else "an unreadable lock file", why
    )

  def _take_local(self, data: bytes, force: bool, max_age_hours: float) -> None:
    path = self.path
    os.makedirs(self.output, exist_ok=True)
    for _ in range(3):
      try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        other = read_record(path)
        if other is None:
          try:
            young = time.time() - os.path.getmtime(path) < _UNREADABLE_LOCK_GRACE_S
          except OSError:
            continue  # gone meanwhile: try again
          if young and not force:
            self._refuse({"pid": "?", "host": "?", "started": "just now"})
        self._take_over(other, force, max_age_hours)
        self._remove_stale_local(path, other)
        continue
      with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
      self._held = path
      return
    raise OptionsError(f"could not take the lock {path}: other runs keep taking it; try again")

  @staticmethod
  def _remove_stale_local(path: str, other: dict[str, Any] | None) -> None:
    """Moves the stale lock aside and deletes it, unless another run replaced it meanwhile (then puts it back)."""
    aside = f"{path}.{uuid.uuid4().hex}.stale"
    try:
      os.rename(path, aside)
    except FileNotFoundError:
      return
    moved = read_record(aside)
    if other is not None and (moved or {}).get("run_id") != other.get("run_id"):
      try:
        os.link(aside, path)  # a fresh lock another starter just took: give it back
      except OSError:
        pass
    os.remove(aside)

  def _take_gcs(self, data: bytes, force: bool, max_age_hours: float) -> None:
    from apache_beam.io.gcp.gcsio import GcsIO, parse_gcs_path
    from google.api_core.exceptions import NotFound, PreconditionFailed

    path = self.path
    bucket_name, name = parse_gcs_path(path)
    bucket = GcsIO(pipeline_options=self._options).client.bucket(bucket_name)
    for _ in range(3):
      blob, other = bucket.get_blob(name), None
      generation = 0
      if blob is not None:
        generation = blob.generation
        try:
          other = json.loads(blob.download_as_bytes(if_generation_match=generation).decode("utf-8"))
        except (NotFound, PreconditionFailed):
          continue  # replaced or removed meanwhile: look again
        except ValueError:
          other = None
        young = blob.updated is not None and time.time() - blob.updated.timestamp() < _UNREADABLE_LOCK_GRACE_S
        if other is None and young and not force:
          self._refuse({"pid": "?", "host": "?", "started": "just now"})
        self._take_over(other if isinstance(other, dict) else None, force, max_age_hours)
      target = bucket.blob(name)
      try:
        target.upload_from_string(data, content_type="application/json", if_generation_match=generation)
      except PreconditionFailed:
        continue  # another run wrote the lock between our read and our write: judge it
      self._held = (target, target.generation)
      return
    raise OptionsError(f"could not take the lock {path}: other runs keep taking it; try again")

  def release(self, run_id: str) -> None:
    """Removes the lock if it is still this run's (a --force_unlock run may have taken it)."""
    lock, self._held = self._held, None
    if lock is None:
      return
    try:
      if isinstance(lock, str):
        if (read_record(lock) or {}).get("run_id") == run_id:
          os.remove(lock)
      else:
        blob, generation = lock
        blob.delete(if_generation_match=generation)
    except Exception as exc:  # a lock left behind is taken over as stale by the next run
      _LOG.warning("could not remove the lock %s: %s", self.path, exc)
