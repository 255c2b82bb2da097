"""What an output folder holds (``OUT/run_state.json``), one run per folder (``OUT/.deconvseg.lock``), clean stops.

A folder's masks can be trusted one by one (each is renamed into place), but
a folder as a whole only when the run that wrote it finished. So before any
work a run writes ``run_state.json`` with ``"status": "running"``, its id,
host, pid, start time and command, and rewrites it as ``complete``,
``failed`` or ``stopped`` when it ends. A run killed outright leaves
``running`` with a pid that no longer exists, which readers
(``pipeline.report``, ``pipeline.evaluate``) recognise; a re-run into a
finished folder flips it back to ``running`` first, so a kill half-way
never leaves a stale ``complete`` beside half-rewritten masks.

The lock holds the same record. Locally it is created with ``O_CREAT |
O_EXCL``; on ``gs://`` it is one object written with the precondition
``if_generation_match=0`` (or the generation of the stale lock it replaces),
so of two runs starting together exactly one gets it. A lock whose run is
gone (a dead pid on this host) or older than ``--lock_max_age_hours`` is taken
over with a log line; ``--force_unlock`` takes over any lock.

SIGINT and SIGTERM (``install_signal_handlers``) stop the run by raising
``RunStopped`` in the main thread, where the in-process runner works; Beam
wraps whatever it catches in its own errors, so the launcher asks
``stop_signal()`` rather than trusting the exception's type. A second signal
ends the process at once.
"""

import contextlib
import datetime
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.errors import OptionsError
from transforms.out_files import atomic_write, join, remove_temp_dir
from transforms.records import new_run_id, redact

_LOG = logging.getLogger("deconvseg")
STATE_FILE = "run_state.json"
LOCK_FILE = ".deconvseg.lock"
RUNNING, COMPLETE, FAILED, STOPPED = "running", "complete", "failed", "stopped"
# A launcher that returned before its remote job ended (a template, a non-blocking launch): the job's
# last step writes summary.json with this run's id, which is then the mark of a finished run.
SUBMITTED = "submitted"
DEFAULT_LOCK_MAX_AGE_HOURS = 24.0
_UNREADABLE_LOCK_GRACE_S = 30.0  # a lock file still being written by the run that created it


class RunStateOptions(PipelineOptions):
  """The output folder's lock."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument(
      "--force_unlock",
      action="store_true",
      default=False,
      help="Take over OUT's lock even when another run holds it (only when you know that run is gone: "
      "two runs writing one folder overwrite each other's records).",
    )
    parser.add_argument(
      "--lock_max_age_hours",
      type=float,
      default=DEFAULT_LOCK_MAX_AGE_HOURS,
      metavar="HOURS",
      help="A lock on OUT older than this is taken over as stale, whoever holds it (default 24); "
      "a lock of a process that is gone from this host is taken over at once.",
    )


def now_iso(seconds: float = None) -> str:
  return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if seconds is None else seconds))


def _age_hours(record: dict) -> float:
  try:
    started = datetime.datetime.strptime(str(record.get("started")), "%Y-%m-%dT%H:%M:%SZ")
  except ValueError:
    return float("inf")
  started = started.replace(tzinfo=datetime.timezone.utc)
  return (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 3600


def pid_alive(pid) -> bool:
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


def is_live(record: dict, max_age_hours: float = DEFAULT_LOCK_MAX_AGE_HOURS) -> bool:
  """Whether the run a lock or state record names may still be running.

  A process on another host cannot be probed, so only age retires it.
  """
  if _age_hours(record) > max_age_hours:
    return False
  if record.get("host") == socket.gethostname():
    return pid_alive(record.get("pid"))
  return True


def describe(record: dict) -> str:
  return f"pid {record.get('pid')} on {record.get('host')}, started {record.get('started')}"


def _read_json(path: str):
  """The parsed object at ``path``; None when it does not exist or holds no JSON object."""
  try:
    with FileSystems.open(path, compression_type="uncompressed") as handle:
      value = json.loads(handle.read().decode("utf-8"))
  except Exception:
    return None
  return value if isinstance(value, dict) else None


def read_state(output: str):
  """OUT/run_state.json as a dict, or None (an older run's folder, or not a run's folder)."""
  return _read_json(join(output, STATE_FILE))


def incomplete_reason(output: str, summary: dict = None):
  """One sentence when OUT does not hold a finished run (per run_state.json), else None.

  ``running`` written by this very process is the launcher writing its own
  report before it marks the run complete, so it is not reported.
  """
  state = read_state(output)
  if state is None:
    return None
  status = state.get("status")
  if status == COMPLETE:
    return None
  summary_run = (summary or {}).get("run_id")
  if status == SUBMITTED and summary_run == state.get("run_id"):
    return None
  older = ""
  if summary_run and summary_run != state.get("run_id"):
    older = f"; summary.json is from an earlier run (ended {summary.get('end_time')})"
  if status == SUBMITTED:
    return (
      f"this folder's run was submitted to {state.get('runner')} at {state.get('started')} and has not written "
      f"its summary.json yet: the job is still running, or it failed{older}"
    )
  if status == RUNNING:
    if state.get("host") == socket.gethostname() and str(state.get("pid")) == str(os.getpid()):
      return None
    if is_live(state):
      return f"this folder holds a run still in progress ({describe(state)}); its outputs are not final{older}"
    why = f"its process ({describe(state)}) is gone: killed or crashed"
  elif status == STOPPED:
    why = f"stopped by {state.get('signal') or 'a signal'} at {state.get('finished')}"
    if state.get("progress"):
      why += f" after {state['progress']}"
  elif status == FAILED:
    why = f"failed at {state.get('finished')}: {state.get('error')}"
  else:
    why = f"unknown status {status!r}"
  return f"this folder holds an incomplete run ({why}); re-run with --skip_existing{older}"


class RunState:
  """One run's record in OUT: the lock it holds and the state it writes."""

  def __init__(self, output: str, argv, pipeline_options=None):
    self.output = output.rstrip("/")
    self.record = {
      "status": RUNNING,
      "run_id": new_run_id(),
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "started": now_iso(),
      "command": ["python", "-m", "pipeline.run"] + [redact(str(arg)) for arg in argv],
    }
    self._options = pipeline_options
    self._lock = None  # what release() needs: a local path or (blob, generation)
    # --force_unlock over a run that still looked alive: its temporaries must not be cleaned away
    self.shares_folder = False

  @property
  def run_id(self) -> str:
    return self.record["run_id"]

  @property
  def started_at(self) -> float:
    return (
      datetime.datetime.strptime(self.record["started"], "%Y-%m-%dT%H:%M:%SZ")
      .replace(tzinfo=datetime.timezone.utc)
      .timestamp()
    )

  def _data(self) -> bytes:
    return json.dumps(self.record, indent=2, ensure_ascii=False).encode("utf-8")

  def begin(self, force: bool = False, max_age_hours: float = DEFAULT_LOCK_MAX_AGE_HOURS):
    """Takes OUT's lock (OptionsError when another live run holds it), then writes the state ``running``."""
    path = join(self.output, LOCK_FILE)
    if self.output.startswith("gs://"):
      self._lock_gcs(path, force, max_age_hours)
    elif "://" not in self.output:
      self._lock_local(path, force, max_age_hours)
    else:
      _LOG.warning("no lock for %s (only local folders and gs:// are locked); two runs into it would collide", path)
    try:
      self.write()
    except BaseException:
      self.release()
      raise

  def write(self):
    atomic_write(self.output, join(self.output, STATE_FILE), self._data(), "application/json")

  def finish(self, status: str, **fields):
    """Writes the final state and releases the lock.

    Raises only when a finished run cannot record itself as complete: the
    folder then says "running", and the run must not exit 0. Otherwise the
    run's own outcome matters more, and a failed write is logged.
    """
    self.record.update(status=status, finished=now_iso(), **{k: v for k, v in fields.items() if v is not None})
    unrecorded = None
    with deferred_signals():
      try:
        if self._holds_lock():
          self.write()
          remove_temp_dir(self.output)
        else:
          _LOG.warning("another run took over the lock of %s; its run_state.json is left as it is", self.output)
      except Exception as exc:
        if status == COMPLETE:
          unrecorded = exc
        else:
          _LOG.warning("could not record the run as %s in %s: %s", status, join(self.output, STATE_FILE), exc)
      self.release()
    if unrecorded is not None:
      raise unrecorded

  def _holds_lock(self) -> bool:
    """False when a --force_unlock run took the lock: the folder's state is that run's to write now."""
    lock = self._lock
    if lock is None:  # a scheme without locks
      return True
    if isinstance(lock, str):
      return (_read_json(lock) or {}).get("run_id") == self.run_id
    blob, generation = lock
    current = blob.bucket.get_blob(blob.name)
    return current is not None and current.generation == generation

  def _refuse(self, other: dict, path: str):
    raise OptionsError(
      f"another run is writing to {self.output} ({describe(other)}; lock {path}); wait for it to finish, "
      "or pass --force_unlock if that run is gone"
    )

  def _take_over(self, other, path: str, force: bool, max_age_hours: float):
    """Refuses a live holder unless forced; logs the take-over of any other."""
    if other is not None and is_live(other, max_age_hours):
      if not force:
        self._refuse(other, path)
      self.shares_folder = True
    why = "--force_unlock" if force else "its run is gone or older than --lock_max_age_hours"
    _LOG.warning(
      "taking over the lock %s of %s (%s)", path, describe(other) if other else "an unreadable lock file", why
    )

  def _lock_local(self, path: str, force: bool, max_age_hours: float):
    os.makedirs(self.output, exist_ok=True)
    for _ in range(3):
      try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        other = _read_json(path)
        if other is None:
          try:
            young = time.time() - os.path.getmtime(path) < _UNREADABLE_LOCK_GRACE_S
          except OSError:
            continue  # gone meanwhile: try again
          if young and not force:
            self._refuse({"pid": "?", "host": "?", "started": "just now"}, path)
        self._take_over(other, path, force, max_age_hours)
        self._remove_stale_local(path, other)
        continue
      with os.fdopen(fd, "wb") as handle:
        handle.write(self._data())
        handle.flush()
        os.fsync(handle.fileno())
      self._lock = path
      return
    raise OptionsError(f"could not take the lock {path}: other runs keep taking it; try again")

  @staticmethod
  def _remove_stale_local(path: str, other):
    """Moves the stale lock aside and deletes it, unless another run replaced it meanwhile (then puts it back)."""
    aside = f"{path}.{uuid.uuid4().hex}.stale"
    try:
      os.rename(path, aside)
    except FileNotFoundError:
      return
    moved = _read_json(aside)
    if other is not None and (moved or {}).get("run_id") != other.get("run_id"):
      try:
        os.link(aside, path)  # a fresh lock another starter just took: give it back
      except OSError:
        pass
    os.remove(aside)

  def _lock_gcs(self, path: str, force: bool, max_age_hours: float):
    from apache_beam.io.gcp.gcsio import GcsIO, parse_gcs_path
    from google.api_core.exceptions import NotFound, PreconditionFailed

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
          self._refuse({"pid": "?", "host": "?", "started": "just now"}, path)
        self._take_over(other if isinstance(other, dict) else None, path, force, max_age_hours)
      target = bucket.blob(name)
      try:
        target.upload_from_string(self._data(), content_type="application/json", if_generation_match=generation)
      except PreconditionFailed:
        continue  # another run wrote the lock between our read and our write: judge it
      self._lock = (target, target.generation)
      return
    raise OptionsError(f"could not take the lock {path}: other runs keep taking it; try again")

  def release(self):
    """Removes the lock if it is still this run's (a --force_unlock run may have taken it)."""
    lock, self._lock = self._lock, None
    if lock is None:
      return
    try:
      if isinstance(lock, str):
        if (_read_json(lock) or {}).get("run_id") == self.run_id:
          os.remove(lock)
      else:
        blob, generation = lock
        blob.delete(if_generation_match=generation)
    except Exception as exc:  # a lock left behind is taken over as stale by the next run
      _LOG.warning("could not remove the lock %s: %s", join(self.output, LOCK_FILE), exc)


class RunStopped(BaseException):
  """Raised in the main thread by the first SIGINT/SIGTERM; a BaseException so ``except Exception`` cannot hide it."""

  def __init__(self, signum: int, progress: str = None):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum
    self.progress = progress  # "N of M images", as far as OUT tells

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


_stop = {"signum": None, "deferred": False}


def stop_signal():
  """The signal that stopped this run, or None."""
  return _stop["signum"]


def _silence_beam():
  """Beam logs each bundle the stop unwinds through with its traceback; none of that is news to the user.

  Only a stopping process calls this: it exits right after the stop is recorded.
  """

  class _DropBeam(logging.Filter):
    def filter(self, record):
      return not record.name.startswith("apache_beam")

  for handler in logging.getLogger().handlers:
    handler.addFilter(_DropBeam())
  logging.getLogger("apache_beam").setLevel(logging.CRITICAL + 1)
  # Beam's threads that watch worker processes (multi_processing) raise when those end with the run.
  threading.excepthook = lambda args: None


def _on_signal(signum, frame):
  if _stop["signum"] is not None:
    sys.stderr.write(f"\ndeconvseg: {signal.Signals(signum).name} again: exiting now\n")
    sys.stderr.flush()
    os._exit(128 + signum)
  _stop["signum"] = signum
  _silence_beam()
  if not _stop["deferred"]:
    raise RunStopped(signum)


@contextlib.contextmanager
def deferred_signals():
  """A first signal during the block is only recorded (``stop_signal``): lock and state writes finish whole."""
  outer, _stop["deferred"] = _stop["deferred"], True
  try:
    yield
  finally:
    _stop["deferred"] = outer


def install_signal_handlers():
  """SIGINT and SIGTERM stop the run (``RunStopped``); returns what ``restore_signal_handlers`` needs."""
  _stop["signum"], _stop["deferred"] = None, False
  previous = {}
  try:
    for signum in (signal.SIGINT, signal.SIGTERM):
      if signal.getsignal(signum) is signal.SIG_IGN:
        continue  # e.g. SIGINT of a shell script's background job, which Python itself leaves ignored
      previous[signum] = signal.signal(signum, _on_signal)
  except ValueError:  # not the main thread: leave signals alone
    pass
  return previous


def restore_signal_handlers(previous: dict):
  for signum, handler in previous.items():
    signal.signal(signum, handler)
