"""Validation while training: a traced predictor, a split's metrics and the per-epoch callback of model.train.

The callback scores the validation split after every epoch, appends the row to
metrics.jsonl + metrics.csv, saves last.keras (and best.keras when the mean IoU
improved), records state.json for --resume and stops once the time budget is spent.
"""

import csv
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model.data.data import evaluation_dataset
from model.metrics import confusion_matrix, segmentation_metrics
from model.training.tiled import predict_image


def make_prediction_function(model: Any, with_confidence: bool = False) -> Callable[[Any], Any]:
  """A traced argmax predictor for one image of any size (no retracing per shape).

  With ``with_confidence`` it returns (class ids, winning-class probability), as the export's signature does.
  """
  channels = int(model.input_shape[-1])

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32)], reduce_retracing=True)
  def predict(images: Any) -> Any:
    logits = model(images, training=False)
    class_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
    if not with_confidence:
      return class_ids
    return class_ids, tf.reduce_max(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), axis=-1)

  return predict


def evaluate_keras_model(
  model: Any, data_dir: str, split: str, num_classes: int, class_names: Sequence[str], dtype: str = "uint8"
) -> tuple[dict[str, Any], np.ndarray]:
  """Confusion matrix and metrics of an in-memory Keras model over a whole split, at native size (tiled when large)."""
  predict = make_prediction_function(model)
  dataset, _ = evaluation_dataset(data_dir, split, channels=int(model.input_shape[-1]), dtype=dtype)
  confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
  for image, mask in dataset:
    predicted = predict_image(lambda batch: predict(batch).numpy(), image.numpy())
    confusion += confusion_matrix(mask.numpy(), predicted, num_classes)
  return segmentation_metrics(confusion, class_names), confusion


class EpochEvaluation(keras.callbacks.Callback):
  """Validation mean IoU each epoch, the metrics log, last/best checkpoints and the time budget."""

  def __init__(
    self,
    data_dir: str,
    split: str,
    out_dir: str,
    class_names: Sequence[str],
    best_mean_iou: float = -1.0,
    time_budget_seconds: float | None = None,
    dtype: str = "uint8",
  ) -> None:
    super().__init__()
    self.dtype = dtype
    self.data_dir = data_dir
    self.split = split
    self.out_dir = out_dir
    self.class_names = list(class_names)
    self.best_mean_iou = best_mean_iou
    self.time_budget_seconds = time_budget_seconds
    self.started = time.monotonic()
    self.epoch_started = self.started

  def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
    self.epoch_started = time.monotonic()

  def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
    logs = logs if logs is not None else {}
    metrics, _ = evaluate_keras_model(
      self.model, self.data_dir, self.split, len(self.class_names), self.class_names, self.dtype
    )
    row = self._metrics_row(epoch, logs, metrics)
    logs["val_mean_iou"] = metrics["mean_iou"]
    improved = metrics["mean_iou"] > self.best_mean_iou
    if improved:
      self.best_mean_iou = metrics["mean_iou"]
      self.model.save(os.path.join(self.out_dir, "best.keras"))
    row["best_val_mean_iou"] = self.best_mean_iou
    self.model.save(os.path.join(self.out_dir, "last.keras"))
    self._append_log(row)
    with open(os.path.join(self.out_dir, "state.json"), "w") as handle:
      json.dump({"epoch": epoch + 1, "best_val_mean_iou": self.best_mean_iou}, handle)
    print(
      f"\nepoch {epoch + 1}: val mean IoU {metrics['mean_iou']:.4f} (best {self.best_mean_iou:.4f}) "
      f"pixel acc {metrics['pixel_accuracy']:.4f} lr {row['learning_rate']:.2e}",
      flush=True,
    )
    if self.time_budget_seconds is not None and time.monotonic() - self.started >= self.time_budget_seconds:
      print(f"time budget of {self.time_budget_seconds / 60:.1f} minutes used up: stopping", flush=True)
      self.model.stop_training = True

  def _metrics_row(self, epoch: int, logs: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """One epoch's row of metrics.jsonl / metrics.csv, before its best_val_mean_iou."""
    learning_rate = self.model.optimizer.learning_rate
    row = {
      "epoch": epoch + 1,
      "loss": float(logs.get("loss", float("nan"))),
      "learning_rate": float(keras.ops.convert_to_numpy(learning_rate)),
      "val_pixel_accuracy": metrics["pixel_accuracy"],
      "val_mean_accuracy": metrics["mean_accuracy"],
      "val_mean_iou": metrics["mean_iou"],
      "val_fw_iou": metrics["fw_iou"],
      "epoch_seconds": round(time.monotonic() - self.epoch_started, 2),
      "elapsed_seconds": round(time.monotonic() - self.started, 2),
    }
    row.update({f"val_iou_{name}": value for name, value in metrics["per_class_iou"].items()})
    return row

  def _append_log(self, row: dict[str, Any]) -> None:
    with open(os.path.join(self.out_dir, "metrics.jsonl"), "a") as handle:
      handle.write(json.dumps(row) + "\n")
    csv_path = os.path.join(self.out_dir, "metrics.csv")
    write_header = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as handle:
      writer = csv.DictWriter(handle, fieldnames=list(row))
      if write_header:
        writer.writeheader()
      writer.writerow(row)
