"""Throughput log lines from inside workers (Beam metrics only arrive at the end locally)."""

import logging
import threading
import time

_LOG = logging.getLogger("deconvseg.progress")


class Progress:
  """Process-wide counter that logs at most one line per interval."""

  def __init__(self, what: str, interval: float = 10.0) -> None:
    self._what = what
    self._lock = threading.Lock()
    self._interval = interval
    self._start: float | None = None
    self._last = 0.0
    self._items = 0
    self._pixels = 0

  def add(self, items: int, pixels: int) -> None:
    with self._lock:
      now = time.monotonic()
      if self._start is None:
        self._start = self._last = now
      self._items += items
      self._pixels += pixels
      if now - self._last >= self._interval:
        self._last = now
        elapsed = max(now - self._start, 1e-9)
        _LOG.info(
          "progress: %d %s, %.1f Mpx in this worker (%.2f %s/s, %.2f Mpx/s)",
          self._items,
          self._what,
          self._pixels / 1e6,
          self._items / elapsed,
          self._what,
          self._pixels / 1e6 / elapsed,
        )


INFERENCE = Progress("tiles inferred")
WRITTEN = Progress("images written")
