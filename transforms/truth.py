"""Ground truth: how well each mask agrees with a labelled mask, computed where the mask is in hand.

A truth mask is a single-channel image of class ids (a palette PNG counts by
its indices; 255 = ignore). It belongs to the image whose key, extension
dropped, equals the truth file's path relative to its pattern's root
(``transforms.read.glob_root``), extension dropped: ``--input
'photos/**/*.jpg'`` key ``a/b.jpg`` and ``--truth 'truth/**/*.png'`` file
``truth/a/b.png`` share the stem ``a/b``.

Only an n x n confusion matrix and a few numbers per image leave the step
that holds the mask. The metrics are FCN's (Long et al. 2015, section 5),
computed from confusion matrices exactly as ``model/metrics.py`` does; the
pipeline half may not import ``model/`` (docs/CONTRACTS.md), so the
formulas are restated here and ``tests/test_truth.py`` checks both agree.
"""

import io
import posixpath
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from PIL import Image

from transforms.read import glob_root, key_for

IGNORE_LABEL = 255
# Modes whose pixel values are class ids as they are (P: palette indices).
SINGLE_CHANNEL_MODES = ("P", "L", "1", "I", "I;16", "I;16B", "I;16L")


class TruthError(ValueError):
  """A truth mask that cannot be compared with its image; the message names the file and the reason."""


def stem(key: str) -> str:
  """A key without its extension: what images and truth masks are matched on."""
  return posixpath.splitext(key)[0]


def truth_stem(path: str, pattern: str) -> str:
  """The stem a truth file matches: its path relative to the pattern's root, sanitised like image keys."""
  return stem(key_for(path, glob_root(pattern)))


def read_truth(uri: str, width: int, height: int, num_classes: int) -> np.ndarray:
  """The truth mask at ``uri`` as a [height, width] integer array of class ids or IGNORE_LABEL.

  The size is checked from the header, before any pixel is decoded; the
  pixels keep their own integer type (no int64 copy of every mask).
  """
  with FileSystems.open(uri, compression_type="uncompressed") as handle:
    data = handle.read()
  try:
    image = Image.open(io.BytesIO(data))
  except Exception as exc:
    raise TruthError(f"truth mask {uri} cannot be decoded: {exc}") from None
  with image:
    if image.size != (width, height):
      raise TruthError(f"truth mask {uri} is {image.size[0]}x{image.size[1]} but the image is {width}x{height}")
    if image.mode not in SINGLE_CHANNEL_MODES:
      raise TruthError(
        f"truth mask {uri} is {image.mode}; it must hold one class id per pixel "
        "(greyscale, palette or 16-bit greyscale PNG)"
      )
    try:
      labels = np.asarray(image)
    except Exception as exc:  # truncated data surfaces here
      raise TruthError(f"truth mask {uri} cannot be decoded: {exc}") from None
  if labels.dtype == bool:
    labels = labels.view(np.uint8)
  bad = labels >= num_classes
  bad &= labels != IGNORE_LABEL
  if labels.dtype.kind == "i":
    bad |= labels < 0
  if bad.any():
    raise TruthError(
      f"truth mask {uri} has class id {int(labels[bad][0])} but the model has {num_classes} "
      f"classes (0-{num_classes - 1}; {IGNORE_LABEL} = ignore)"
    )
  return labels


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
  """counts[truth, predicted] over the pixels whose truth is not IGNORE_LABEL.

  Ignored pixels are counted into one extra bin that is dropped, which is
  several times faster than compacting the arrays first.
  """
  cells = num_classes * num_classes
  index = labels.astype(np.int32) * num_classes
  index += predicted
  index[labels == IGNORE_LABEL] = cells
  return np.bincount(index.ravel(), minlength=cells + 1)[:cells].reshape(num_classes, num_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """Elementwise ratio, NaN where the denominator is zero (a class absent from truth and prediction)."""
  result = np.full(numerator.shape, np.nan)
  np.divide(numerator, denominator, out=result, where=denominator > 0)
  return result


def _or_none(value: Any) -> float | None:
  return None if value is None or np.isnan(value) else float(value)


def metrics(confusion: Any, names: Sequence[str]) -> dict[str, Any]:
  """FCN's four metrics and per-class IoU and accuracy; None (null in JSON) where undefined."""
  confusion = np.asarray(confusion, dtype=np.float64)
  correct = np.diag(confusion)
  truth_pixels = confusion.sum(axis=1)
  predicted_pixels = confusion.sum(axis=0)
  total = confusion.sum()
  iou = _ratio(correct, truth_pixels + predicted_pixels - correct)
  accuracy = _ratio(correct, truth_pixels)
  present = ~np.isnan(iou)
  with np.errstate(invalid="ignore"):
    return {
      "pixel_accuracy": _or_none(correct.sum() / total) if total else None,
      "mean_accuracy": _or_none(np.nanmean(accuracy)) if (~np.isnan(accuracy)).any() else None,
      "mean_iou": _or_none(np.nanmean(iou)) if present.any() else None,
      "fw_iou": float((truth_pixels[present] / total * iou[present]).sum()) if total else None,
      "per_class_iou": {name: _or_none(value) for name, value in zip(names, iou)},
      "per_class_accuracy": {name: _or_none(value) for name, value in zip(names, accuracy)},
    }


def image_truth(uri: str, labels: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
  """The ``truth`` block of one image's stats record."""
  confusion = confusion_matrix(labels, predicted, len(names))
  scores = metrics(confusion, names)
  return {
    "uri": uri,
    "pixels": int(confusion.sum()),
    "ignored": int(labels.size - confusion.sum()),
    "pixel_accuracy": scores["pixel_accuracy"],
    "mean_iou": scores["mean_iou"],
    "per_class_iou": scores["per_class_iou"],
    "confusion": confusion.tolist(),
  }


def evaluate_mask(uri: str, predicted: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
  """Reads the truth mask at ``uri`` and compares it with ``predicted`` ([H, W] class ids)."""
  height, width = predicted.shape
  return image_truth(uri, read_truth(uri, width, height, len(names)), predicted, names)


def run_truth(
  confusion: Any,
  names: Sequence[str],
  with_truth: int,
  without_truth: int,
  unmatched: int,
  failed: int,
  patterns: Sequence[str],
) -> dict[str, Any]:
  """The run-level ``truth`` block of summary.json and evaluation.json (from the summed confusion)."""
  confusion = np.asarray(confusion, dtype=np.int64)
  scores = metrics(confusion, names)
  return {
    "patterns": list(patterns),
    "images_with_truth": int(with_truth),
    "images_without_truth": int(without_truth),
    "truth_files_unmatched": int(unmatched),
    "images_failed": int(failed),
    "pixels": int(confusion.sum()),
    "pixel_accuracy": scores["pixel_accuracy"],
    "mean_accuracy": scores["mean_accuracy"],
    "mean_iou": scores["mean_iou"],
    "fw_iou": scores["fw_iou"],
    "per_class_iou": scores["per_class_iou"],
    "per_class_accuracy": scores["per_class_accuracy"],
    "classes": list(names),
    "confusion": confusion.tolist(),
  }


def truth_index(paths_by_pattern: dict[str, list[str]]) -> dict[str, str]:
  """{stem: truth URI}; where two files share a stem the smallest URI wins (validation refuses that)."""
  index: dict[str, str] = {}
  for pattern, paths in paths_by_pattern.items():
    for path in paths:
      key = truth_stem(path, pattern)
      if key not in index or path < index[key]:
        index[key] = path
  return index


def _smallest(uris: Any) -> Any:
  return min(uris)


class MatchTruth(beam.PTransform):
  """Composite: PBegin -> (stem, truth URI), one per stem; only paths travel, never pixels."""

  def __init__(self, patterns: Sequence[str]):
    super().__init__()
    self._patterns = list(patterns)

  def expand(self, pbegin: Any) -> Any:
    matched = [
      pbegin
      | f"MatchTruth{i}" >> fileio.MatchFiles(pattern)
      | f"TruthStems{i}" >> beam.Map(lambda m, p: (truth_stem(m.path, p), m.path), pattern)
      for i, pattern in enumerate(self._patterns)
    ]
    return matched | "AllTruth" >> beam.Flatten() | "OneTruthPerStem" >> beam.CombinePerKey(_smallest)


def _unmatched(joined: Any) -> Iterator[Any]:
  _, groups = joined
  if groups["truth"] and not groups["images"]:
    yield groups["truth"][0]


class UnmatchedTruth(beam.PTransform):
  """Composite: ((stem, uri) truth, image refs) -> URIs of truth files that match no image read."""

  def __init__(self, truth: Any):
    super().__init__()
    self._truth = truth

  def expand(self, refs: Any) -> Any:
    stems = refs | "ImageStems" >> beam.Map(lambda ref: (stem(ref.key), None))
    return (
      {"truth": self._truth, "images": stems}
      | "JoinTruthToImages" >> beam.CoGroupByKey()
      | "TruthWithoutImage" >> beam.FlatMap(_unmatched)
    )
