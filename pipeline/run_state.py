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

The lock holds the same record; ``pipeline.folder_lock`` takes it (locally
with ``O_CREAT | O_EXCL``, on ``gs://`` with a generation precondition), takes
over stale ones and releases it. ``RunState`` ties the two together: lock
first, then state.

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
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.folder_lock import (
  DEFAULT_LOCK_MAX_AGE_HOURS,
  LOCK_FILE,
  FolderLock,
  describe,
  is_live,
  pid_alive,
  read_record,
)
from transforms.imaging.records import new_run_id, redact
from transforms.out_files import atomic_write, join, remove_temp_dir

__all__ = [
  "COMPLETE",
  "DEFAULT_LOCK_MAX_AGE_HOURS",
  "FAILED",
  "LOCK_FILE",
  "RUNNING",
  "STATE_FILE",
  "STOPPED",
  "SUBMITTED",
  "RunState",
  "RunStateOptions",
  "RunStopped",
  "deferred_signals",
  "describe",
  "incomplete_reason",
  "install_signal_handlers",
  "is_live",
  "now_iso",
  "pid_alive",
  "read_state",
  "restore_signal_handlers",
  "stop_signal",
]

_LOG = logging.getLogger("deconvseg")
STATE_FILE = "run_state.json"
RUNNING, COMPLETE, FAILED, STOPPED = "running", "complete", "failed", "stopped"
# A launcher that returned before its remote job ended (a template, a non-blocking launch): the job's
# last step writes summary.json with this run's id, which is then the mark of a finished run.
SUBMITTED = "submitted"


class RunStateOptions(PipelineOptions):
  """The output folder's lock."""

  @classmethod
  def _add_argparse_args(cls, parser: Any) -> None:
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


def now_iso(seconds: float | None = None) -> str:
  return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if seconds is None else seconds))


def read_state(output: str) -> dict[str, Any] | None:
  """OUT/run_state.json as a dict, or None (an older run's folder, or not a run's folder)."""
  return read_record(join(output, STATE_FILE))


def incomplete_reason(output: str, summary: dict[str, Any] | None = None) -> str | None:
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
    older = f"; summary.json is from an earlier run (ended {(summary or {}).get('end_time')})"
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
  """One run's record in OUT: the lock it holds (``pipeline.folder_lock``) and the state it writes."""

  def __init__(self, output: str, argv: Sequence[Any], pipeline_options: Any = None) -> None:
    self.output = output.rstrip("/")
    self.record: dict[str, Any] = {
      "status": RUNNING,
      "run_id": new_run_id(),
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "started": now_iso(),
      "command": ["python", "-m", "pipeline.run"] + [redact(str(arg)) for arg in argv],
    }
    self._lock = FolderLock(self.output, pipeline_options)

  @property
  def run_id(self) -> str:
    return self.record["run_id"]

  @property
  def shares_folder(self) -> bool:
    """--force_unlock over a run that still looked alive: its temporaries must not be cleaned away."""
    return self._lock.shares_folder

  @property
  def started_at(self) -> float:
    return (
      datetime.datetime.strptime(self.record["started"], "%Y-%m-%dT%H:%M:%SZ")
      .replace(tzinfo=datetime.timezone.utc)
      .timestamp()
    )

  def _data(self) -> bytes:
    return json.dumps(self.record, indent=2, ensure_ascii=False).encode("utf-8")

  def begin(self, force: bool = False, max_age_hours: float = DEFAULT_LOCK_MAX_AGE_HOURS) -> None:
    """Takes OUT's lock (OptionsError when another live run holds it), then writes the state ``running``."""
    self._lock.take(self._data(), force, max_age_hours)
    try:
      self.write()
    except BaseException:
      self.release()
      raise

  def write(self) -> None:
    atomic_write(self.output, join(self.output, STATE_FILE), self._data(), "application/json")

  def finish(self, status: str, **fields: Any) -> None:
    """Writes the final state and releases the lock.

    Raises only when a finished run cannot record itself as complete: the
    folder then says "running", and the run must not exit 0. Otherwise the
    run's own outcome matters more, and a failed write is logged.
    """
    self.record.update(status=status, finished=now_iso(), **{k: v for k, v in fields.items() if v is not None})
    unrecorded = None
    with deferred_signals():
      try:
        if self._lock.holds(self.run_id):
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

  def release(self) -> None:
    """Removes the lock if it is still this run's (a --force_unlock run may have taken it)."""
    self._lock.release(self.run_id)


class RunStopped(BaseException):
  """Raised in the main thread by the first SIGINT/SIGTERM; a BaseException so ``except Exception`` cannot hide it."""

  def __init__(self, signum: int, progress: str | None = None) -> None:
    super().__init__(signal.Signals(signum).name)
    self.signum = signum
    self.progress = progress  # "N of M images", as far as OUT tells

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


_stop: dict[str, Any] = {"signum": None, "deferred": False}


def stop_signal() -> int | None:
  """The signal that stopped this run, or None."""
  return _stop["signum"]


def _silence_beam() -> None:
  """Beam logs each bundle the stop unwinds through with its traceback; none of that is news to the user.

  Only a stopping process calls this: it exits right after the stop is recorded.
  """

  class _DropBeam(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
      return not record.name.startswith("apache_beam")

  for handler in logging.getLogger().handlers:
    handler.addFilter(_DropBeam())
  logging.getLogger("apache_beam").setLevel(logging.CRITICAL + 1)
  # Beam's threads that watch worker processes (multi_processing) raise when those end with the run.
  threading.excepthook = lambda args: None


def _on_signal(signum: int, frame: FrameType | None) -> None:
  if _stop["signum"] is not None:
    sys.stderr.write(f"\ndeconvseg: {signal.Signals(signum).name} again: exiting now\n")
    sys.stderr.flush()
    os._exit(128 + signum)
  _stop["signum"] = signum
  _silence_beam()
  if not _stop["deferred"]:
    raise RunStopped(signum)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
  """A first signal during the block is only recorded (``stop_signal``): lock and state writes finish whole."""
  outer, _stop["deferred"] = _stop["deferred"], True
  try:
    yield
  finally:
    _stop["deferred"] = outer


def install_signal_handlers() -> dict[int, Any]:
  """SIGINT and SIGTERM stop the run (``RunStopped``); returns what ``restore_signal_handlers`` needs."""
  _stop["signum"], _stop["deferred"] = None, False
  previous: dict[int, Any] = {}
  try:
    for signum in (signal.SIGINT, signal.SIGTERM):
      if signal.getsignal(signum) is signal.SIG_IGN:
        continue  # e.g. SIGINT of a shell script's background job, which Python itself leaves ignored
      previous[signum] = signal.signal(signum, _on_signal)
  except ValueError:  # not the main thread: leave signals alone
    pass
  return previous


def restore_signal_handlers(previous: dict[int, Any]) -> None:
  for signum, handler in previous.items():
    signal.signal(signum, handler)
