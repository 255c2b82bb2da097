"""Boundary F-score (BF): how well a mask's class edges agree with the truth's, in plain numpy.

IoU is dominated by region interiors, so a decoder that draws sharper edges
barely moves it; BF (Csurka et al. 2013, "What is a good evaluation measure
for semantic segmentation?"; MATLAB's ``bfscore``) scores the edges alone.

Definition, per image and class c:

- A pixel is on c's boundary when it is c and one of its 4-neighbours inside
  the image is not (a 4-connected test gives a one-pixel-thin, 8-connected
  contour, as MATLAB's ``bwperim`` default). The image frame is no boundary.
- Pixels whose truth is ignore (255) are in neither boundary set, and a truth
  pixel whose only other-label neighbours are ignore is no boundary either:
  an unlabelled neighbour does not say where the class ends.
- precision = share of predicted boundary pixels at Euclidean distance
  <= ``tolerance`` pixels of a truth boundary pixel of c; recall the same
  the other way round; BF = 2PR / (P + R), 0 when P = R = 0.
- Neither mask has a boundary pixel of c (c absent from both, or filling all
  of both): BF is undefined, NaN here and null in JSON, and left out of every
  mean. A boundary in one mask only: BF = 0.

Over a split, a class's BF is the mean of its per-image values where defined
(Csurka et al. average per image, so a small image counts as much as a large
one), and the mean BF is the mean over the classes that have one.

Numpy only (no scipy in the pipeline's install): the classes are packed as
bits, eight to a byte, so one dilation by a disk (shifted ORs, O(tolerance)
passes) serves eight classes at once.
"""

import argparse
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from model.data.classes import IGNORE_LABEL

DEFAULT_TOLERANCE = 2.0


def check_tolerance(tolerance: float) -> float:
  """The tolerance as a float; a ValueError for a negative or non-finite one."""
  value = float(tolerance)
  if not math.isfinite(value) or value < 0:
    raise ValueError(f"the boundary tolerance must be a finite number of pixels >= 0, not {tolerance}")
  return value


def add_bf_tolerance_argument(parser: argparse.ArgumentParser) -> None:
  """``--bf_tolerance`` on an argparse parser; ``check_bf_tolerance_argument`` checks the parsed value."""
  parser.add_argument(
    "--bf_tolerance",
    type=float,
    default=DEFAULT_TOLERANCE,
    help=f"boundary F-score: how far (pixels, Euclidean) a boundary pixel may be from the other mask's and "
    f"still match (default {DEFAULT_TOLERANCE:g})",
  )


def check_bf_tolerance_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """``parser.error("--bf_tolerance: ...")`` when the parsed tolerance is negative or not finite."""
  problem = None
  try:
    check_tolerance(args.bf_tolerance)
  except ValueError as exc:
    problem = exc
  if problem is not None:  # outside the except: the one-line error carries no chained traceback
    parser.error(f"--bf_tolerance: {problem}")


def _edges(labels: np.ndarray, ignore_label: int | None = None) -> np.ndarray:
  """Pixels with a 4-neighbour of another label; pairs with an ignore_label pixel do not count."""
  edges = np.zeros(labels.shape, bool)
  for first, second, into_first, into_second in (
    (labels[1:], labels[:-1], edges[1:], edges[:-1]),
    (labels[:, 1:], labels[:, :-1], edges[:, 1:], edges[:, :-1]),
  ):
    differ = first != second
    if ignore_label is not None:
      differ &= first != ignore_label
      differ &= second != ignore_label
    into_first |= differ
    into_second |= differ
  return edges


def _dilate(bits: np.ndarray, tolerance: float) -> np.ndarray:
  """OR of ``bits`` over a disk of radius ``tolerance`` (offsets dy^2 + dx^2 <= tolerance^2)."""
  reach = int(math.floor(tolerance))
  if reach == 0 or not bits.any():
    return bits
  height, width = bits.shape
  # Half-widths of the disk's rows; rows[w] = bits ORed over dx in [-w, w].
  half_widths = [
    int(math.floor(math.sqrt(max(tolerance * tolerance - dy * dy, 0.0)) + 1e-9)) for dy in range(reach + 1)
  ]
  rows = [bits]
  for dx in range(1, half_widths[0] + 1):
    row = rows[-1].copy()
    if dx < width:
      row[:, dx:] |= bits[:, :-dx]
      row[:, :-dx] |= bits[:, dx:]
    rows.append(row)
  out = rows[half_widths[0]].copy()
  for dy in range(1, reach + 1):
    if dy >= height:
      break
    row = rows[half_widths[dy]]
    out[dy:] |= row[:-dy]
    out[:-dy] |= row[dy:]
  return out


def boundary_counts(
  truth: npt.ArrayLike,
  predicted: npt.ArrayLike,
  num_classes: int,
  tolerance: float = DEFAULT_TOLERANCE,
  ignore_label: int = IGNORE_LABEL,
) -> np.ndarray:
  """[4, num_classes] int64: predicted boundary pixels, those matched, truth boundary pixels, those matched.

  ``truth`` holds class ids or ``ignore_label``, ``predicted`` class ids, both
  [H, W]. Counts (rather than scores) so that callers can check or pool them.
  """
  truth_ids, predicted_ids = np.asarray(truth), np.asarray(predicted)
  if truth_ids.ndim != 2 or truth_ids.shape != predicted_ids.shape:
    raise ValueError(
      f"truth and prediction must be [H, W] arrays of one size: {truth_ids.shape} vs {predicted_ids.shape}"
    )
  if not 0 < num_classes <= ignore_label <= 255:
    raise ValueError(f"need 0 < num_classes <= ignore_label <= 255, not {num_classes} and {ignore_label}")
  tolerance = check_tolerance(tolerance)
  counts = np.zeros((4, num_classes), np.int64)
  if truth_ids.size == 0:
    return counts
  if predicted_ids.min() < 0 or predicted_ids.max() >= num_classes:
    raise ValueError(f"prediction values must be in [0, {num_classes})")
  if truth_ids.min() < 0 or truth_ids.max() > 255 or ((truth_ids >= num_classes) & (truth_ids != ignore_label)).any():
    raise ValueError(f"truth values must be in [0, {num_classes}) or {ignore_label}")
  truth_ids, predicted_ids = truth_ids.astype(np.uint8, copy=False), predicted_ids.astype(np.uint8, copy=False)
  known = truth_ids != ignore_label
  truth_edges = _edges(truth_ids, ignore_label)
  predicted_edges = _edges(predicted_ids)
  predicted_edges &= known
  # Boundary pixels are a few percent of the image: count them from their flat indices.
  truth_index, predicted_index = np.flatnonzero(truth_edges), np.flatnonzero(predicted_edges)
  truth_class, predicted_class = truth_ids.ravel()[truth_index], predicted_ids.ravel()[predicted_index]
  counts[0] = np.bincount(predicted_class, minlength=num_classes)
  counts[2] = np.bincount(truth_class, minlength=num_classes)
  present = (counts[0] > 0) | (counts[2] > 0)
  for first in range(0, num_classes, 8):
    if not present[first : first + 8].any():
      continue
    lookup = np.zeros(256, np.uint8)  # class id -> its bit within this group of eight
    group = np.arange(first, min(first + 8, num_classes))
    lookup[group] = (1 << (group - first)).astype(np.uint8)
    truth_bits, predicted_bits = np.zeros(truth_ids.size, np.uint8), np.zeros(truth_ids.size, np.uint8)
    truth_bits[truth_index] = lookup[truth_class]
    predicted_bits[predicted_index] = lookup[predicted_class]
    near_truth = _dilate(truth_bits.reshape(truth_ids.shape), tolerance).ravel()[predicted_index]
    near_predicted = _dilate(predicted_bits.reshape(truth_ids.shape), tolerance).ravel()[truth_index]
    matched = (near_truth & predicted_bits[predicted_index]) != 0
    counts[1, group] = np.bincount(predicted_class[matched], minlength=num_classes)[group]
    matched = (near_predicted & truth_bits[truth_index]) != 0
    counts[3, group] = np.bincount(truth_class[matched], minlength=num_classes)[group]
  return counts


def boundary_f1_from_counts(counts: npt.ArrayLike) -> np.ndarray:
  """[num_classes] BF from ``boundary_counts``; NaN where neither mask has a boundary of the class."""
  predicted, predicted_matched, truth, truth_matched = np.asarray(counts, np.float64)
  precision = np.divide(predicted_matched, predicted, out=np.zeros_like(predicted), where=predicted > 0)
  recall = np.divide(truth_matched, truth, out=np.zeros_like(truth), where=truth > 0)
  total = precision + recall
  score = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
  score[(predicted == 0) & (truth == 0)] = np.nan
  return score


def boundary_f1(
  truth: npt.ArrayLike,
  predicted: npt.ArrayLike,
  num_classes: int,
  tolerance: float = DEFAULT_TOLERANCE,
  ignore_label: int = IGNORE_LABEL,
) -> np.ndarray:
  """[num_classes] per-class BF of one image (NaN where undefined); see the module docstring."""
  return boundary_f1_from_counts(boundary_counts(truth, predicted, num_classes, tolerance, ignore_label))


def _or_none(value: float | None) -> float | None:
  return None if value is None or np.isnan(value) else float(value)


def image_boundary_scores(scores: npt.ArrayLike, names: Sequence[str]) -> dict[str, Any]:
  """One image's JSON fields: ``per_class_boundary_f1`` ({class: value or null}) and ``mean_boundary_f1``."""
  values = np.asarray(scores, np.float64)
  defined = ~np.isnan(values)
  return {
    "mean_boundary_f1": float(values[defined].mean()) if defined.any() else None,
    "per_class_boundary_f1": {name: _or_none(value) for name, value in zip(names, values)},
  }


class BoundaryF1Mean:
  """Per-class BF averaged over the images where it is defined (Csurka et al.'s per-image mean)."""

  def __init__(self, num_classes: int) -> None:
    self.sums = np.zeros(num_classes, np.float64)
    self.images = np.zeros(num_classes, np.int64)

  def add(self, scores: npt.ArrayLike) -> None:
    """Adds one image's per-class BF (NaN where undefined)."""
    values = np.asarray(scores, np.float64)
    defined = ~np.isnan(values)
    self.sums[defined] += values[defined]
    self.images += defined

  def result(self, names: Sequence[str], tolerance: float) -> dict[str, Any]:
    """``mean_boundary_f1``, ``per_class_boundary_f1``, ``boundary_f1_images`` ({class: images scored}) and
    ``boundary_tolerance`` (pixels)."""
    means = np.full(self.sums.shape, np.nan)
    np.divide(self.sums, self.images, out=means, where=self.images > 0)
    result = image_boundary_scores(means, names)
    result["boundary_f1_images"] = {name: int(count) for name, count in zip(names, self.images)}
    result["boundary_tolerance"] = float(tolerance)
    return result
