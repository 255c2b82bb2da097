"""Ordered background work for a DoFn, so the in-process runner's single bundle thread can keep the model busy.

Beam's local FnApiRunner fuses decode, tiling, inference and writing into one
thread; work handed to ``Lookahead`` runs on its own thread (zlib, Pillow and
file I/O release the GIL) while that thread is inside TensorFlow. Results
come back in submission order with the window and timestamp of their input,
and no more than ``limit`` inputs are ever outstanding, fewer when items are
large (``pixel_budget`` over the last item's pixels), so memory stays bounded.
"""
import collections
import concurrent.futures
from typing import Callable, Optional

from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue


class Lookahead:
  """A bounded, order-preserving queue of futures on one worker thread."""

  def __init__(self, limit: int, pixel_budget: Optional[int] = None, name: str = "deconvseg"):
    self._limit = max(1, int(limit))
    self._pixel_budget = pixel_budget
    self._name = name
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
    self._pending = collections.deque()
    self._ahead = self._limit

  def reset(self):
    """A new bundle: nothing outstanding (a failed bundle's leftovers are dropped)."""
    self._pending.clear()
    self._ahead = self._limit

  def submit(self, fn: Callable, item, window=None, timestamp=None):
    self._pending.append((self._pool.submit(fn, item), window, timestamp))

  def over_limit(self):
    """Results that must be taken now to get back within the look-ahead, oldest first."""
    while len(self._pending) > self._ahead:
      yield self._pending.popleft()[0].result()

  def drain(self):
    """(result, window, timestamp) for everything outstanding, oldest first (finish_bundle)."""
    while self._pending:
      future, window, timestamp = self._pending.popleft()
      yield future.result(), window, timestamp

  def sized(self, pixels: int):
    """Shrinks the look-ahead to what ``pixel_budget`` allows for items of this many pixels."""
    if self._pixel_budget:
      self._ahead = max(1, min(self._limit, self._pixel_budget // max(1, int(pixels))))

  def close(self):
    self._pool.shutdown(wait=True)


def windowed(output, window, timestamp):
  """An output from finish_bundle, which must carry its window explicitly."""
  if isinstance(output, TaggedOutput):
    return TaggedOutput(output.tag, WindowedValue(output.value, timestamp, [window]))
  return WindowedValue(output, timestamp, [window])
