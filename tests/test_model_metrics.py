"""Confusion matrix and FCN metrics against hand-computed values and keras.metrics.MeanIoU."""

import keras
import numpy as np
import pytest

from model.metrics import confusion_matrix, segmentation_metrics


def test_hand_computed_example():
  labels = np.array([[0, 0, 1], [1, 2, 255]])
  predictions = np.array([[0, 1, 1], [1, 2, 0]])
  confusion = confusion_matrix(labels, predictions, 3)
  np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 0], [0, 0, 1]])
  metrics = segmentation_metrics(confusion, ["a", "b", "c"])
  assert metrics["pixel_accuracy"] == pytest.approx(4 / 5)
  assert metrics["mean_accuracy"] == pytest.approx((1 / 2 + 1 + 1) / 3)
  # IoU: a = 1/(2+1-1) = 1/2, b = 2/(2+3-2) = 2/3, c = 1.
  assert metrics["per_class_iou"] == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 1.0})
  assert metrics["mean_iou"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
  assert metrics["fw_iou"] == pytest.approx(2 / 5 * 0.5 + 2 / 5 * 2 / 3 + 1 / 5 * 1.0)


def test_absent_class_is_left_out_of_means():
  metrics = segmentation_metrics(confusion_matrix([0, 0, 1], [0, 0, 1], 3))
  assert metrics["per_class_iou"]["2"] is None
  assert metrics["mean_iou"] == pytest.approx(1.0)
  assert metrics["mean_accuracy"] == pytest.approx(1.0)


def test_agrees_with_keras_mean_iou():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 5, size=(4, 32, 32))
  predictions = np.where(rng.random(labels.shape) < 0.7, labels, rng.integers(0, 5, size=labels.shape))
  labels[:, :3] = 255
  keep = labels != 255
  keras_metric = keras.metrics.MeanIoU(num_classes=5)
  keras_metric.update_state(labels[keep], predictions[keep])
  ours = segmentation_metrics(confusion_matrix(labels, predictions, 5))
  assert ours["mean_iou"] == pytest.approx(float(keras_metric.result()), abs=1e-6)
  keras_ignoring = keras.metrics.MeanIoU(num_classes=5, ignore_class=255)
  keras_ignoring.update_state(labels, predictions)
  assert ours["mean_iou"] == pytest.approx(float(keras_ignoring.result()), abs=1e-6)


def test_rejects_out_of_range_values():
  with pytest.raises(ValueError):
    confusion_matrix([0, 7], [0, 1], 3)
  with pytest.raises(ValueError):
    confusion_matrix([0, 1], [0, 1, 2], 3)
  with pytest.raises(ValueError):
    segmentation_metrics(np.zeros((2, 2)))
