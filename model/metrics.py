"""FCN's four segmentation metrics from a confusion matrix, in plain numpy.

The matrix is accumulated over a whole split, then the metrics are computed
once, exactly as in Long et al. 2015 section 5 (not averaged per image).
"""

import numpy as np

from model.classes import IGNORE_LABEL


def confusion_matrix(labels, predictions, num_classes, ignore_label=IGNORE_LABEL):
  """counts[true, predicted] over all pixels whose label is not ignore_label."""
  labels = np.asarray(labels).ravel().astype(np.int64)
  predictions = np.asarray(predictions).ravel().astype(np.int64)
  if labels.shape != predictions.shape:
    raise ValueError(f"labels and predictions differ in size: {labels.shape} vs {predictions.shape}")
  keep = labels != ignore_label
  labels, predictions = labels[keep], predictions[keep]
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"label values must be in [0, {num_classes}) or {ignore_label}")
  if predictions.size and (predictions.min() < 0 or predictions.max() >= num_classes):
    raise ValueError(f"prediction values must be in [0, {num_classes})")
  return np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes).reshape(
    num_classes, num_classes
  )


def _safe_divide(numerator, denominator):
  """Elementwise division that gives NaN where the denominator is zero (class absent)."""
  numerator = numerator.astype(np.float64)
  denominator = denominator.astype(np.float64)
  result = np.full(numerator.shape, np.nan)
  np.divide(numerator, denominator, out=result, where=denominator > 0)
  return result


def segmentation_metrics(confusion, class_names=None):
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
