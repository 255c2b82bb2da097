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
from collections.abc import Iterator
from typing import Any, Callable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue


class Finished(NamedTuple):
  """A finished item drained at the end of a bundle, with the window and timestamp of its input."""

  outcome: Any
  window: Any
  timestamp: Any


class Lookahead:
  """A bounded, order-preserving queue of futures on one worker thread."""

  def __init__(self, limit: int, pixel_budget: Optional[int] = None, name: str = "deconvseg") -> None:
    self._limit = max(1, int(limit))
    self._pixel_budget = pixel_budget
    self._name = name
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
    # (future of the outcome, window, timestamp) per submitted item, oldest first
    self._pending: collections.deque[tuple[concurrent.futures.Future[Any], Any, Any]] = collections.deque()
    self._ahead = self._limit

  def reset(self) -> None:
    """A new bundle: nothing outstanding (a failed bundle's leftovers are dropped)."""
    self._pending.clear()
    self._ahead = self._limit

  def submit(self, fn: Callable[[Any], Any], item: Any, window: Any = None, timestamp: Any = None) -> None:
    self._pending.append((self._pool.submit(fn, item), window, timestamp))

  def over_limit(self) -> Iterator[Any]:
    """Results that must be taken now to get back within the look-ahead, oldest first."""
    while len(self._pending) > self._ahead:
      yield self._pending.popleft()[0].result()

  def drain(self) -> Iterator[Finished]:
    """A ``Finished`` for everything outstanding, oldest first (finish_bundle)."""
    while self._pending:
      future, window, timestamp = self._pending.popleft()
      yield Finished(future.result(), window, timestamp)

  def sized(self, pixels: int) -> None:
    """Shrinks the look-ahead to what ``pixel_budget`` allows for items of this many pixels."""
    if self._pixel_budget:
      self._ahead = max(1, min(self._limit, self._pixel_budget // max(1, int(pixels))))

  def close(self) -> None:
    self._pool.shutdown(wait=True)


def windowed(output: Any, window: Any, timestamp: Any) -> TaggedOutput | WindowedValue:
  """An output from finish_bundle, which must carry its window explicitly."""
  if isinstance(output, TaggedOutput):
    return TaggedOutput(output.tag, WindowedValue(output.value, timestamp, [window]))
  return WindowedValue(output, timestamp, [window])


class LookaheadDoFn(beam.DoFn):
  """A DoFn whose per-element work runs on a ``Lookahead`` thread (inline when ``limit`` is 0).

  Subclasses provide ``_work(item)`` (runs on the worker thread, must not
  raise, returns an outcome), ``_outputs(outcome)`` (runs on the bundle
  thread: metrics and emitted elements) and optionally ``_pixels_of(item)``
  (sizes the look-ahead before the item is queued). Outcomes are emitted in
  input order; those still pending at the end of a bundle are emitted from
  ``finish_bundle`` with their input's window.
  """

  def __init__(self, limit: int = 0, pixel_budget: Optional[int] = None, name: str = "deconvseg") -> None:
    self._lookahead_limit = max(0, int(limit))
    self._lookahead_pixels = pixel_budget
    self._lookahead_name = name
    self._ahead: Lookahead | None = None

  def setup(self) -> None:
    if self._lookahead_limit:
      self._ahead = Lookahead(self._lookahead_limit, self._lookahead_pixels, self._lookahead_name)

  def start_bundle(self) -> None:
    if self._ahead is not None:
      self._ahead.reset()

  def process(
    self, item: Any, window: Any = beam.DoFn.WindowParam, timestamp: Any = beam.DoFn.TimestampParam
  ) -> Iterator[Any]:
    if self._ahead is None:
      yield from self._outputs(self._work(item))
      return
    self._ahead.submit(self._work, item, window, timestamp)
    pixels = self._pixels_of(item)
    if pixels:
      self._ahead.sized(pixels)
    for outcome in self._ahead.over_limit():
      yield from self._outputs(outcome)

  def finish_bundle(self) -> Iterator[Any]:
    if self._ahead is None:
      return
    for finished in self._ahead.drain():
      for output in self._outputs(finished.outcome):
        yield windowed(output, finished.window, finished.timestamp)

  def teardown(self) -> None:
    if self._ahead is not None:
      self._ahead.close()
      self._ahead = None

  def _work(self, item: Any) -> Any:
    raise NotImplementedError

  def _outputs(self, outcome: Any) -> Iterator[Any]:
    raise NotImplementedError

  def _pixels_of(self, item: Any) -> Optional[int]:
    return None
