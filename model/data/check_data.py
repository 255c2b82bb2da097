"""Check a labelled dataset before training on it, and describe it.

    python -m model.check_data DIR [--classes background,nucleus] [--splits train,val,test]

Reads every image and mask once (folders or TFRecord shards, as model.data
does) and reports per split the image and mask counts, size ranges, channels
and bit depth, and pixels per class, plus per-band statistics of the train
split for input normalisation. Problems that would otherwise surface an hour
into training, or never (a colour mask read as ids, a class id the head does
not have, a mask of the wrong size), are collected over the whole dataset and
reported together, each naming its file, so one run finds them all.
Exits 0 with the report, or 1 with ``check_data: error:`` and the problems.
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar, cast

import numpy as np

from model.data.check_data_pairs import Item, folder_split, split_shards, tfrecord_items
from model.data.classes import CLASSES_FILE, IGNORE_LABEL, ClassesError, SegmentationClass, dataset_classes
from model.data.image_io import read_image, read_mask

T = TypeVar("T")
SPLITS = ("train", "val", "test")
REQUIRED_SPLIT = "train"
MAX_LISTED_PROBLEMS = 20
# Band statistics come from a strided subsample of every train image, thinned
# as the split grows so memory stays bounded (a few MB) for any dataset size.
SAMPLE_BUDGET_PIXELS = 2_000_000
SAMPLE_START_PIXELS_PER_IMAGE = 16_384


class DataError(ValueError):
  """The dataset has problems; ``problems`` lists them all, the message shows the first few."""

  def __init__(self, data_dir: str, problems: Iterable[str]) -> None:
    self.data_dir = data_dir
    self.problems = list(problems)
    super().__init__(format_problems(data_dir, self.problems))


def format_problems(data_dir: str, problems: Sequence[str], limit: int = MAX_LISTED_PROBLEMS) -> str:
  count = len(problems)
  lines = [f"{count} problem{'s' if count != 1 else ''} in {data_dir}:"]
  lines += [f"  - {problem}" for problem in problems[:limit]]
  if count > limit:
    lines.append(f"  and {count - limit} more")
  return "\n".join(lines)


class _ImageFacts(NamedTuple):
  """An image's size, bands and bit depth (numpy dtype name)."""

  height: int
  width: int
  channels: int
  dtype: str


@dataclasses.dataclass
class _Examined:
  image_label: str
  image: _ImageFacts | None = None
  counts: np.ndarray | None = None
  sample: np.ndarray | None = None
  problems: list[str] = dataclasses.field(default_factory=list)


def _examine(item: Item, classes: Sequence[SegmentationClass], classes_source: str, sample_pixels: int) -> _Examined:
  """Decode one pair and measure it; every problem is returned, never raised, so one bad file stops nothing."""
  result = _Examined(item.image_label)
  image = mask = None
  try:
    image = read_image(item.image_source, name=item.image_label)
  except (ValueError, OSError) as exc:
    result.problems.append(_named(exc, item.image_label))
  try:
    mask = read_mask(item.mask_source, name=item.mask_label, classes=classes)
  except (ValueError, OSError) as exc:
    result.problems.append(_named(exc, item.mask_label))
  if image is not None:
    height, width, channels = image.shape
    result.image = _ImageFacts(height, width, channels, image.dtype.name)
    if sample_pixels:
      stride = max(1, int(np.ceil(np.sqrt(image.shape[0] * image.shape[1] / sample_pixels))))
      result.sample = image[::stride, ::stride].reshape(-1, image.shape[2]).copy()
  if mask is not None:
    if image is not None and mask.shape != image.shape[:2]:
      result.problems.append(
        f"{item.mask_label} is {mask.shape[1]}x{mask.shape[0]} but {item.image_label} is "
        f"{image.shape[1]}x{image.shape[0]} (width x height); a mask must have its image's size"
      )
    result.counts = np.bincount(mask.ravel(), minlength=256)
    bad = [str(i) for i in np.flatnonzero(result.counts[len(classes) : IGNORE_LABEL]) + len(classes)]
    if bad:
      result.problems.append(
        f"{item.mask_label} has class id{'s' if len(bad) > 1 else ''} {', '.join(bad)}, but {classes_source} "
        f"lists 0..{len(classes) - 1}; fix the mask or add the class"
      )
  return result


def _named(exc: BaseException, label: str) -> str:
  message = str(exc)
  return message if label in message else f"{label} cannot be read: {message}"


def _ordered_map(function: Callable[[Item], _Examined], items: Iterable[Item], workers: int) -> Iterator[_Examined]:
  """function over items on a thread pool (Pillow, zlib and numpy release the GIL), in order, a bounded window in flight."""
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending: collections.deque[concurrent.futures.Future[_Examined]] = collections.deque()
    for item in items:
      pending.append(pool.submit(function, item))
      if len(pending) >= 4 * workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


class _BandSampler:
  """Strided pixel samples of many images, halved whenever they outgrow the budget."""

  def __init__(self, budget: int = SAMPLE_BUDGET_PIXELS, start: int = SAMPLE_START_PIXELS_PER_IMAGE) -> None:
    self.budget, self.per_image, self.total = budget, start, 0
    self.samples: list[np.ndarray] = []

  def add(self, sample: np.ndarray) -> None:
    self.samples.append(sample)
    self.total += len(sample)
    while self.total > self.budget and self.per_image > 1:
      self.samples = [s[::2].copy() for s in self.samples]  # copies, so the dropped halves are freed
      self.total = sum(len(s) for s in self.samples)
      self.per_image = max(1, self.per_image // 2)

  def statistics(self) -> dict[str, Any] | None:
    if not self.samples:
      return None
    pixels = np.concatenate(self.samples).astype(np.float64)
    low, high = np.percentile(pixels, [1, 99], axis=0)
    return {
      "mean": [round(float(v), 4) for v in pixels.mean(axis=0)],
      "std": [round(float(v), 4) for v in pixels.std(axis=0)],
      "p01": [round(float(v), 4) for v in low],
      "p99": [round(float(v), 4) for v in high],
      "sampled_pixels": int(len(pixels)),
    }


def _resolve_classes(
  data_dir: str, classes: Sequence[SegmentationClass] | Sequence[str] | str | None
) -> tuple[Sequence[SegmentationClass], str]:
  """(class list, how messages name its source) from SegmentationClass objects, names, a comma string or None."""
  try:
    if classes is None:
      return dataset_classes(data_dir), CLASSES_FILE
    if isinstance(classes, str) or all(isinstance(c, str) for c in classes):
      names = classes if isinstance(classes, str) else ",".join(cast(Sequence[str], classes))
      source = CLASSES_FILE if os.path.exists(os.path.join(data_dir, CLASSES_FILE)) else "--classes"
      return dataset_classes(data_dir, names), source
  except ClassesError as exc:
    raise DataError(data_dir, [str(exc)]) from None
  class_list = tuple(classes)
  if not all(isinstance(c, SegmentationClass) for c in class_list):
    raise TypeError("classes must be SegmentationClass objects, class names, a comma-separated string or None")
  source = CLASSES_FILE if os.path.exists(os.path.join(data_dir, CLASSES_FILE)) else "the class list"
  return cast(tuple[SegmentationClass, ...], class_list), source


def _mixed(values: Sequence[tuple[T, str]], noun: Callable[[str, T, T], str], problems: list[str]) -> T | None:
  """The most common value of an image property; every image that differs is a problem."""
  counts = collections.Counter(value for value, _ in values)
  if not counts:
    return None
  common = counts.most_common(1)[0][0]
  for value, label in values:
    if value != common:
      problems.append(noun(label, value, common))
  return common


def _channels_noun(label: str, value: int, common: int) -> str:
  plural = lambda n: f"{n} channel{'s' if n != 1 else ''}"
  return f"{label} has {plural(value)} but the others have {common}; give every image the same bands"


def _dtype_noun(label: str, value: str, common: str) -> str:
  bits = {"uint8": "8-bit", "uint16": "16-bit"}
  return f"{label} is {bits[value]} ({value}) but the others are {bits[common]} ({common}); store every image at one bit depth"


@dataclasses.dataclass
class _Findings:
  """What checking the splits collects: every problem, each image's bands and bit depth, the absent splits."""

  problems: list[str] = dataclasses.field(default_factory=list)
  channel_values: list[tuple[int, str]] = dataclasses.field(default_factory=list)
  dtype_values: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  missing: list[str] = dataclasses.field(default_factory=list)


def _split_items(
  data_dir: str, split: str, problems: list[str]
) -> tuple[str, Iterable[Item], collections.Counter[str], list[str]] | None:
  """(layout, pairs to examine, image/mask counts, ignored files) of a split, or None when it is absent.

  Folders win when both exist, as in model.data; TFRecord pairs are read, and counted, as they are examined.
  """
  split_dir = os.path.join(data_dir, split)
  has_folders = any(os.path.isdir(os.path.join(split_dir, sub)) for sub in ("images", "masks"))
  shards = split_shards(data_dir, split)
  counter: collections.Counter[str] = collections.Counter()
  image_dir = os.path.join(split_dir, "images")
  has_images = os.path.isdir(image_dir) and any(not name.startswith(".") for name in os.listdir(image_dir))
  if has_folders and (has_images or not shards):
    items, counter["images"], counter["masks"], ignored = folder_split(data_dir, split, problems)
    return "folders", items, counter, ignored
  if shards:
    return "tfrecord", tfrecord_items(data_dir, shards, problems, counter), counter, []
  return None


def _check_split(
  data_dir: str,
  split: str,
  class_list: Sequence[SegmentationClass],
  classes_source: str,
  sampler: _BandSampler,
  workers: int,
  findings: _Findings,
) -> dict[str, Any] | None:
  """Examine every pair of one split on the thread pool; its report entry, or None when the split is absent."""
  found = _split_items(data_dir, split, findings.problems)
  if found is None:
    findings.missing.append(split)
    if split == REQUIRED_SPLIT:
      findings.problems.append(
        f"there is no {split} split: expected {split}/images + {split}/masks folders "
        f"or TFRecord shards in {split}/shards/"
      )
    return None
  layout, items, counter, ignored = found
  totals = np.zeros(256, dtype=np.int64)
  heights: list[int] = []
  widths: list[int] = []
  per_image = sampler.per_image if split == REQUIRED_SPLIT else 0
  examine = functools.partial(_examine, classes=class_list, classes_source=classes_source, sample_pixels=per_image)
  for examined in _ordered_map(examine, items, workers):
    findings.problems.extend(examined.problems)
    if examined.image is not None:
      heights.append(examined.image.height)
      widths.append(examined.image.width)
      findings.channel_values.append((examined.image.channels, examined.image_label))
      findings.dtype_values.append((examined.image.dtype, examined.image_label))
    if examined.sample is not None:
      sampler.add(examined.sample)
    if examined.counts is not None:
      totals += examined.counts
  if counter["images"] == 0:
    where = f"{split}/images" if layout == "folders" else f"the {split} shards"
    findings.problems.append(f"{where} holds no images (the {split} split is empty)")
  return {
    "layout": layout,
    "images": counter["images"],
    "masks": counter["masks"],
    "height": [min(heights), max(heights)] if heights else None,
    "width": [min(widths), max(widths)] if widths else None,
    "class_pixels": [int(v) for v in totals[: len(class_list)]],
    "ignore_pixels": int(totals[IGNORE_LABEL]),
    "ignored_files": ignored,
  }


def check_dataset(
  data_dir: str,
  classes: Sequence[SegmentationClass] | Sequence[str] | str | None,
  splits: Sequence[str] | None = None,
  workers: int | None = None,
) -> dict[str, Any]:
  """Check every image/mask pair of the splits and describe the dataset; DataError lists all problems.

  ``classes``: SegmentationClass objects (model.classes.dataset_classes),
  class names, or None for DIR/classes.json. Only the train split is
  required; absent ones are listed under ``missing_splits``. Returns
  {"data", "classes", "channels", "dtype", "splits": {split: {"layout",
  "images", "masks", "height", "width", "class_pixels", "ignore_pixels",
  "ignored_files"}}, "missing_splits", "band_stats": {"mean", "std", "p01",
  "p99", "sampled_pixels"}} (band statistics of the train split).
  """
  if not os.path.isdir(data_dir):
    raise DataError(data_dir, [f"{data_dir} is not a directory"])
  class_list, classes_source = _resolve_classes(data_dir, classes)
  splits = list(SPLITS if splits is None else splits)
  workers = workers or min(8, os.cpu_count() or 1)
  findings = _Findings()
  report_splits = {}
  sampler = _BandSampler()
  for split in splits:
    entry = _check_split(data_dir, split, class_list, classes_source, sampler, workers, findings)
    if entry is not None:
      report_splits[split] = entry
  problems = findings.problems
  if not findings.channel_values and not problems:
    problems.append(f"no images could be read from the {', '.join(splits)} split{'s' if len(splits) != 1 else ''}")
  channels = _mixed(findings.channel_values, _channels_noun, problems)
  dtype = _mixed(findings.dtype_values, _dtype_noun, problems)
  if problems:
    raise DataError(data_dir, problems)
  return {
    "data": data_dir,
    "classes": [c.name for c in class_list],
    "channels": channels,
    "dtype": dtype,
    "splits": report_splits,
    "missing_splits": findings.missing,
    "band_stats": sampler.statistics(),
  }


def _table(rows: Sequence[Sequence[Any]]) -> list[str]:
  widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
  return [
    "  "
    + "  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
    for row in rows
  ]


def _range(pair: Sequence[int] | None) -> str:
  return "-" if pair is None else (str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}-{pair[1]}")


def format_report(report: dict[str, Any]) -> str:
  """The report as the text table check_data prints."""
  channels = report["channels"]
  lines = [
    f"{report['data']}: {len(report['classes'])} classes ({', '.join(report['classes'])}); "
    f"images have {channels} channel{'s' if channels != 1 else ''}, {report['dtype']}",
    "",
  ]
  splits = report["splits"]
  rows: list[tuple[Any, ...]] = [("split", "layout", "images", "masks", "height", "width")]
  rows += [
    (name, s["layout"], s["images"], s["masks"], _range(s["height"]), _range(s["width"])) for name, s in splits.items()
  ]
  lines += _table(rows)
  if report["missing_splits"]:
    lines.append(f"  not present (optional): {', '.join(report['missing_splits'])}")
  lines += ["", "pixels per class"]
  rows = [("class",) + tuple(splits)]
  for index, name in enumerate(report["classes"] + ["ignore (255)"]):
    row = [f"{index} {name}" if index < len(report["classes"]) else name]
    for split in splits.values():
      total = sum(split["class_pixels"]) + split["ignore_pixels"]
      count = split["class_pixels"][index] if index < len(report["classes"]) else split["ignore_pixels"]
      row.append(f"{count:,} ({100 * count / total:.1f}%)" if total else "0")
    rows.append(tuple(row))
  lines += _table(rows)
  for name, split in splits.items():
    if split["ignored_files"]:
      shown = ", ".join(split["ignored_files"][:5]) + (" ..." if len(split["ignored_files"]) > 5 else "")
      lines.append(f"  {name}/images: {len(split['ignored_files'])} files not read (not an image format): {shown}")
  stats = report["band_stats"]
  if stats:
    lines += ["", f"train band statistics ({stats['sampled_pixels']:,} sampled pixels)"]
    rows = [("band", "mean", "std", "p01", "p99")]
    rows += [
      (band, *(f"{stats[key][band]:.2f}" for key in ("mean", "std", "p01", "p99")))
      for band in range(len(stats["mean"]))
    ]
    lines += _table(rows)
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("data", help="dataset directory (DIR/<split>/images + masks, or TFRecord shards)")
  parser.add_argument("--classes", default=None, help="comma-separated class names, when DIR has no classes.json")
  parser.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits to check (train is required)")
  parser.add_argument("--json", action="store_true", help="print the report as one JSON object instead of a table")
  args = parser.parse_args(argv)
  try:
    report = check_dataset(args.data, args.classes, [s.strip() for s in args.splits.split(",") if s.strip()])
  except DataError as exc:
    print(f"check_data: error: {exc}", file=sys.stderr)
    return 1
  print(json.dumps(report) if args.json else format_report(report))
  return 0
