"""One cell of the ablation: train a network with model.train's recipe in this process and score it.

Records the validation mean IoU after every epoch, then the test mean IoU and
the checkerboard energies of the test probability maps (``model.ablation.stats``).
This is the only ablation module that imports TensorFlow and Keras;
``model.ablation`` imports it only when a cell is to be trained.
"""

import argparse
import gc
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from model.ablation.grid import (
  EXAMPLE_INDEX,
  NETWORK_STRIDE,
  cell_command,
  cell_settings,
  small_train_images,
)
from model.ablation.stats import checkerboard_energy
from model.data.data import training_dataset
from model.metrics import confusion_matrix, segmentation_metrics
from model.network.cost import macs_per_pixel
from model.network.variants import LAST_STRIDE
from model.training.train import build_model

# model.train's flags that every cell takes from the ablation's own flags.
RECIPE_FLAGS = ("encoder", "width", "learning_rate", "epochs", "warmup_epochs", "weight_decay")


class _Scorer:
  """Softmax probabilities of a model over fixed arrays, in batches, through one traced function."""

  def __init__(self, model: Any, batch_size: int = 25) -> None:
    self.batch_size = batch_size

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], reduce_retracing=True)
    def probabilities(images: Any) -> Any:
      return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32), axis=-1)

    self.probabilities = probabilities

  def batches(self, images: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(images), self.batch_size):
      yield start, self.probabilities(images[start : start + self.batch_size]).numpy()

  def mean_iou(self, images: np.ndarray, masks: np.ndarray, num_classes: int) -> dict[str, Any]:
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for start, probabilities in self.batches(images):
      confusion += confusion_matrix(masks[start : start + len(probabilities)], probabilities.argmax(-1), num_classes)
    return segmentation_metrics(confusion)


class _ValidationCurve(keras.callbacks.Callback):
  """The loss, validation mean IoU and seconds since the cell started, after every epoch."""

  def __init__(self, scorer: _Scorer, val: tuple[np.ndarray, np.ndarray], num_classes: int, started: float) -> None:
    super().__init__()
    self.scorer = scorer
    self.val = val
    self.num_classes = num_classes
    self.started = started
    self.curve: list[dict[str, Any]] = []

  def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
    metrics = self.scorer.mean_iou(self.val[0], self.val[1], self.num_classes)
    self.curve.append(
      {
        "epoch": epoch + 1,
        "loss": float((logs or {}).get("loss", float("nan"))),
        "val_mean_iou": metrics["mean_iou"],
        "seconds": round(time.monotonic() - self.started, 2),
      }
    )


class _Trained(NamedTuple):
  """A cell's trained network, its scorer, validation curve and steps per epoch."""

  model: Any
  scorer: _Scorer
  curve: list[dict[str, Any]]
  steps_per_epoch: int


def _train(
  cell: dict[str, Any],
  args: argparse.Namespace,
  data_dir: str,
  val: tuple[np.ndarray, np.ndarray],
  num_classes: int,
  started: float,
) -> _Trained:
  """The cell's network trained with model.train's recipe (model builder, optimizer, schedule, loss, input)."""
  # Both regimes take the same number of steps: the small one sees fewer distinct images, not less training.
  steps = max(1, args.train_images // args.batch_size)
  dataset, steps_per_epoch = training_dataset(
    data_dir, "train", args.batch_size, args.image_size, seed=cell["seed"], min_steps=steps
  )
  recipe = argparse.Namespace(
    variant=cell["variant"],
    upsampling=cell["upsampling"],
    encoder_weights=None,
    **{name: getattr(args, name) for name in RECIPE_FLAGS},
  )
  model = build_model(recipe, num_classes, steps_per_epoch)
  scorer = _Scorer(model)
  validation = _ValidationCurve(scorer, val, num_classes, started)
  model.fit(
    dataset,
    epochs=args.epochs,
    steps_per_epoch=steps_per_epoch,
    callbacks=[validation],
    verbose=0,
    shuffle=False,
  )
  return _Trained(model, scorer, validation.curve, steps_per_epoch)


class _TestScores(NamedTuple):
  """The test split's metrics, checkerboard shares, the example's probabilities and every predicted mask."""

  metrics: dict[str, Any]
  checkerboard: dict[str, Any]
  example: np.ndarray | None
  predicted: np.ndarray


def _score_test(
  scorer: _Scorer, test: tuple[np.ndarray, np.ndarray], variant: str, class_names: Sequence[str]
) -> _TestScores:
  """Metrics and checkerboard energies over the test split, one batch of probability maps at a time."""
  num_classes = len(class_names)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  periods = sorted({LAST_STRIDE[variant], NETWORK_STRIDE})
  energy = {period: [0.0, 0.0] for period in periods}
  example = None
  predicted = np.zeros(test[1].shape, np.uint8)  # kept for boundary scores, which the report computes
  for start, probabilities in scorer.batches(test[0]):
    predicted[start : start + len(probabilities)] = probabilities.argmax(-1)
    confusion += confusion_matrix(test[1][start : start + len(probabilities)], probabilities.argmax(-1), num_classes)
    for map_ in probabilities:
      for period in periods:
        periodic, total = checkerboard_energy(map_, period)
        energy[period][0] += periodic
        energy[period][1] += total
    if start <= EXAMPLE_INDEX < start + len(probabilities):
      example = probabilities[EXAMPLE_INDEX - start]
  checkerboard = {
    "period": LAST_STRIDE[variant],
    "share": energy[LAST_STRIDE[variant]][0] / max(energy[LAST_STRIDE[variant]][1], 1e-30),
    "share_period32": energy[NETWORK_STRIDE][0] / max(energy[NETWORK_STRIDE][1], 1e-30),
  }
  return _TestScores(segmentation_metrics(confusion, class_names), checkerboard, example, predicted)


def run_cell(
  cell: dict[str, Any],
  args: argparse.Namespace,
  paths: dict[str, str],
  val: tuple[np.ndarray, np.ndarray],
  test: tuple[np.ndarray, np.ndarray],
  class_names: Sequence[str],
) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray]:
  """Train one cell in this process with model.train's recipe; returns (its record, example probabilities, masks)."""
  started = time.monotonic()
  keras.backend.clear_session()
  keras.utils.set_random_seed(cell["seed"])
  trained = _train(cell, args, paths[cell["regime"]], val, len(class_names), started)
  train_seconds = time.monotonic() - started
  scores = _score_test(trained.scorer, test, cell["variant"], class_names)
  metrics = scores.metrics
  record = {
    "id": cell["id"],
    "regime": cell["regime"],
    "variant": cell["variant"],
    "upsampling": cell["upsampling"],
    "seed": cell["seed"],
    "test_mean_iou": metrics["mean_iou"],
    "test_pixel_accuracy": metrics["pixel_accuracy"],
    "test_per_class_iou": metrics["per_class_iou"],
    "val_curve": trained.curve,
    "checkerboard": scores.checkerboard,
    "train_images": small_train_images(args) if cell["regime"] == "small" else args.train_images,
    "steps": trained.steps_per_epoch * args.epochs,
    "parameters": int(trained.model.count_params()),
    "macs_per_pixel": round(macs_per_pixel(trained.model, NETWORK_STRIDE * 16)),
    "command": cell_command(args, cell["id"]),
    "train_seconds": round(train_seconds, 1),
    "seconds": round(time.monotonic() - started, 1),
    "settings": cell_settings(args),
  }
  keras.backend.clear_session()
  gc.collect()
  return record, scores.example, scores.predicted
