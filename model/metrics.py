"""FCN's four segmentation metrics from a confusion matrix, in plain numpy.

The matrix is accumulated over a whole split, then the metrics are computed
once, exactly as in Long et al. 2015 section 5 (not averaged per image).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from model.data.classes import IGNORE_LABEL


def confusion_matrix(
  labels: npt.ArrayLike, predictions: npt.ArrayLike, num_classes: int, ignore_label: int = IGNORE_LABEL
) -> np.ndarray:
  """counts[true, predicted] over all pixels whose label is not ignore_label."""
  truth = np.asarray(labels).ravel().astype(np.int64)
  predicted = np.asarray(predictions).ravel().astype(np.int64)
  if truth.shape != predicted.shape:
    raise ValueError(f"labels and predictions differ in size: {truth.shape} vs {predicted.shape}")
  keep = truth != ignore_label
  truth, predicted = truth[keep], predicted[keep]
  if truth.size and (truth.min() < 0 or truth.max() >= num_classes):
    raise ValueError(f"label values must be in [0, {num_classes}) or {ignore_label}")
  if predicted.size and (predicted.min() < 0 or predicted.max() >= num_classes):
    raise ValueError(f"prediction values must be in [0, {num_classes})")
  return np.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes).reshape(
    num_classes, num_classes
  )


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """Elementwise division that gives NaN where the denominator is zero (class absent)."""
  numerator = numerator.astype(np.float64)
  denominator = denominator.astype(np.float64)
  result = np.full(numerator.shape, np.nan)
  np.divide(numerator, denominator, out=result, where=denominator > 0)
  return result


def segmentation_metrics(confusion: npt.ArrayLike, class_names: Sequence[str] | None = None) -> dict[str, Any]:
  """pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU and per-class IoU.

  Classes that never occur in the labels nor the predictions have no IoU and
  are left out of the means (NaN in the per-class values, null in JSON).
  """
  confusion = np.asarray(confusion, dtype=np.float64)
  true_per_class = confusion.sum(axis=1)
  predicted_per_class = confusion.sum(axis=0)
  correct = np.diag(confusion)
  total = confusion.sum()
  if total == 0:
    raise ValueError("empty confusion matrix: no labelled pixels")
  class_accuracy = _safe_divide(correct, true_per_class)
  iou = _safe_divide(correct, true_per_class + predicted_per_class - correct)
  frequency = true_per_class / total
  present = ~np.isnan(iou)
  names = class_names or [str(index) for index in range(len(correct))]
  return {
    "pixel_accuracy": float(correct.sum() / total),
    "mean_accuracy": float(np.nanmean(class_accuracy)),
    "mean_iou": float(np.nanmean(iou)),
    "fw_iou": float((frequency[present] * iou[present]).sum()),
    "per_class_iou": {name: (None if np.isnan(value) else float(value)) for name, value in zip(names, iou)},
    "per_class_accuracy": {
      name: (None if np.isnan(value) else float(value)) for name, value in zip(names, class_accuracy)
    },
  }
