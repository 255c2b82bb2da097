"""The numbers the report shows, gathered in one pass over the records.

Totals, per-class fraction histograms and the image samples (gallery, worst
images, flagged images) all use memory independent of the number of images,
so a report of a million-image run costs what one of a hundred does.
"""

import datetime
import hashlib
import heapq
from typing import Any

from pipeline.report import load

FRACTION_BINS = 50
# Colours for classes when the run did not record a model card.
FALLBACK_PALETTE = (
  (31, 119, 180),
  (255, 127, 14),
  (44, 160, 44),
  (214, 39, 40),
  (148, 103, 189),
  (140, 86, 75),
  (227, 119, 194),
  (127, 127, 127),
  (188, 189, 34),
  (23, 190, 207),
)


class FractionDistribution:
  """Histogram, mean, min and max of one class's per-image fraction, in constant memory."""

  def __init__(self) -> None:
    self.counts = [0] * FRACTION_BINS
    self.n = 0
    self.present = 0
    self.total = 0.0
    self.low = 1.0
    self.high = 0.0

  def add(self, fraction: float) -> None:
    fraction = min(max(fraction, 0.0), 1.0)
    self.counts[min(int(fraction * FRACTION_BINS), FRACTION_BINS - 1)] += 1
    self.n += 1
    self.present += fraction > 0
    self.total += fraction
    self.low = min(self.low, fraction)
    self.high = max(self.high, fraction)

  @property
  def mean(self) -> float:
    return self.total / self.n if self.n else 0.0

  def quantile(self, q: float) -> float:
    """Quantile interpolated inside the histogram bin (accurate to 1/FRACTION_BINS), clamped to min/max."""
    if not self.n:
      return 0.0
    target = q * self.n
    cumulative = 0
    for index, count in enumerate(self.counts):
      if count and cumulative + count >= target:
        value = (index + (target - cumulative) / count) / FRACTION_BINS
        return min(max(value, self.low), self.high)
      cumulative += count
    return self.high


class RunStatistics:
  """Everything the report needs from the stats records, gathered in one pass."""

  def __init__(self, max_gallery: int) -> None:
    self.max_gallery = max_gallery
    self.images = 0
    self.pixels: dict[str, float] = {}
    self.areas: dict[str, float] = {}
    self.distributions: dict[str, FractionDistribution] = {}
    self.confidence_total = 0.0
    self.confidence_images = 0
    self.first_mask: str | None = None
    self._sample: list[
      tuple[int, str, int, load.ImageRecord]
    ] = []  # max-heap (negated hash) of the smallest-hash records; ties never compare records

  def add(self, record: load.ImageRecord) -> None:
    self.images += 1
    self.first_mask = self.first_mask or record.mask_path
    for name, pixels in record.pixels.items():
      self.pixels[name] = self.pixels.get(name, 0.0) + pixels
    for name, area in record.areas.items():
      self.areas[name] = self.areas.get(name, 0.0) + area
    if record.mean_confidence is not None:
      self.confidence_total += record.mean_confidence
      self.confidence_images += 1
    for name in record.fractions:
      self.distributions.setdefault(name, FractionDistribution())
    # A class missing from a record (written by another model's run) counts as fraction 0.
    for name, distribution in self.distributions.items():
      distribution.add(record.fractions.get(name, 0.0))
    if self.max_gallery > 0:
      # The keys with the smallest hash: the same sample whatever order workers wrote the records in.
      rank = int.from_bytes(hashlib.sha256(record.key.encode("utf-8")).digest()[:8], "big")
      entry = (-rank, record.key, self.images, record)
      if len(self._sample) < self.max_gallery:
        heapq.heappush(self._sample, entry)
      elif -rank > self._sample[0][0]:
        heapq.heapreplace(self._sample, entry)

  def finish_distributions(self) -> None:
    """Back-fill zeros for classes first seen after some images (so every class has n == images)."""
    for distribution in self.distributions.values():
      missing = self.images - distribution.n
      if missing > 0:
        distribution.counts[0] += missing
        distribution.n += missing
        distribution.low = 0.0

  def gallery(self) -> list[load.ImageRecord]:
    return [entry[-1] for entry in sorted(self._sample, key=lambda entry: entry[1:3])]


class WorstImages:
  """The images with the lowest mean IoU (then pixel accuracy), in constant memory."""

  def __init__(self, limit: int) -> None:
    self.limit = limit
    self._heap: list[
      tuple[float, float, int, load.ImageRecord]
    ] = []  # max-heap by score (negated): the best of the kept images is on top
    self._seen = 0

  def add(self, record: load.ImageRecord) -> None:
    truth = record.truth or {}
    mean_iou, accuracy = load.number(truth.get("mean_iou")), load.number(truth.get("pixel_accuracy"))
    if mean_iou is None or accuracy is None or self.limit <= 0:
      return  # no labelled pixels: nothing to rank
    self._seen += 1
    entry = (-mean_iou, -accuracy, -self._seen, record)
    if len(self._heap) < self.limit:
      heapq.heappush(self._heap, entry)
    elif entry[:3] > self._heap[0][:3]:
      heapq.heapreplace(self._heap, entry)

  def worst_first(self) -> list[load.ImageRecord]:
    return [entry[-1] for entry in sorted(self._heap, key=lambda entry: (-entry[0], -entry[1], -entry[2]))]


class FlaggedImages:
  """Counts checked and flagged images; keeps the flagged ones with the smallest keys, as summary.json lists them."""

  def __init__(self, limit: int) -> None:
    self.limit = limit
    self.checked = 0
    self.flagged = 0
    self._kept: list[load.ImageRecord] = []

  def add(self, record: load.ImageRecord) -> None:
    if not isinstance(record.ood, dict):
      return
    self.checked += 1
    if record.ood.get("flagged"):
      self.flagged += 1
      self._kept = sorted(self._kept + [record], key=lambda kept: kept.key)[: self.limit]

  def first(self) -> list[load.ImageRecord]:
    return list(self._kept)


class FailureSummary:
  """Failure counts by stage and error type, plus the first rows for the table."""

  def __init__(self, max_rows: int) -> None:
    self.max_rows = max_rows
    self.total = 0
    self.by_kind: dict[tuple[str, str], int] = {}
    self.rows: list[load.FailureRecord] = []

  def add(self, failure: load.FailureRecord) -> None:
    self.total += 1
    kind = (failure.stage, failure.error_type)
    self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
    if len(self.rows) < self.max_rows:
      self.rows.append(failure)

  def kinds(self) -> list[tuple[tuple[str, str], int]]:
    """((stage, error type), count), the most frequent first."""
    return sorted(self.by_kind.items(), key=lambda kv: -kv[1])


def report_classes(card: dict[str, Any], run: load.RunSummary, stats: RunStatistics) -> list[load.ClassInfo]:
  """Classes in id order with colours: the card's, else the masks' palette, else a fixed palette."""
  classes = load.card_classes(card)
  if not classes:
    palette = load.mask_palette(stats.first_mask) if stats.first_mask else None
    for index, name in enumerate(run.totals or stats.pixels):
      class_id = run.class_ids.get(name, index)
      color = (
        palette[class_id] if palette and class_id < len(palette) else FALLBACK_PALETTE[class_id % len(FALLBACK_PALETTE)]
      )
      classes.append(load.ClassInfo(class_id, name, color))
  known = {info.name for info in classes}
  for name in list(stats.pixels) + list(stats.distributions):
    if name not in known:
      index = len(classes)
      classes.append(load.ClassInfo(index, name, FALLBACK_PALETTE[index % len(FALLBACK_PALETTE)]))
      known.add(name)
  return classes


def parse_time(value: Any) -> datetime.datetime | None:
  if not value:
    return None
  try:
    parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
  except ValueError:
    return None
  return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def run_figures(run: load.RunSummary, stats: RunStatistics, failures: FailureSummary) -> dict[str, Any]:
  """Counts, duration, throughput and mean confidence for the summary cards.

  A run that died before summary.json (written last) still gets counts from
  what it wrote.
  """
  counts: dict[str, Any] = dict(run.counts)
  if counts["segmented"] is None:
    counts["segmented"] = stats.images
  if counts["failed"] is None:
    counts["failed"] = failures.total
  if counts["read"] is None:
    counts["read"] = counts["segmented"] + counts["failed"]
  start, end = parse_time(run.start_time), parse_time(run.end_time)
  duration = (end - start).total_seconds() if start and end else None
  return dict(
    counts,
    duration=duration,
    throughput=counts["segmented"] / duration if duration and duration > 0 else None,
    confidence=(stats.confidence_total / stats.confidence_images if stats.confidence_images else None),
  )


def pixels_of(totals: dict[str, load.ClassTotal], name: str) -> float:
  total = totals.get(name)
  return total.pixels if total else 0.0
