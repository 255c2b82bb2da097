"""One cell of the ablation: train a network with model.train's recipe in this process and score it.

Records the validation mean IoU after every epoch, then the test mean IoU and
the checkerboard energies of the test probability maps (``model.ablation_stats``).
This is the only ablation module that imports TensorFlow and Keras;
``model.ablation`` imports it only when a cell is to be trained.
"""

import argparse
import gc
import time

import keras
import numpy as np
import tensorflow as tf

from model.ablation_grid import (
  EXAMPLE_INDEX,
  NETWORK_STRIDE,
  cell_command,
  cell_settings,
  small_train_images,
)
from model.ablation_stats import checkerboard_energy
from model.cost import macs_per_pixel
from model.data import training_dataset
from model.metrics import confusion_matrix, segmentation_metrics
from model.train import build_model
from model.variants import LAST_STRIDE

# model.train's flags that every cell takes from the ablation's own flags.
RECIPE_FLAGS = ("encoder", "width", "learning_rate", "epochs", "warmup_epochs", "weight_decay")


class _Scorer:
  """Softmax probabilities of a model over fixed arrays, in batches, through one traced function."""

  def __init__(self, model, batch_size=25):
    self.batch_size = batch_size

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], reduce_retracing=True)
    def probabilities(images):
      return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32), axis=-1)

    self.probabilities = probabilities

  def batches(self, images):
    for start in range(0, len(images), self.batch_size):
      yield start, self.probabilities(images[start : start + self.batch_size]).numpy()

  def mean_iou(self, images, masks, num_classes):
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for start, probabilities in self.batches(images):
      confusion += confusion_matrix(masks[start : start + len(probabilities)], probabilities.argmax(-1), num_classes)
    return segmentation_metrics(confusion)


def run_cell(cell, args, paths, val, test, class_names):
  """Train one cell in this process with model.train's recipe; returns its record."""
  started = time.monotonic()
  keras.backend.clear_session()
  keras.utils.set_random_seed(cell["seed"])
  data_dir = paths[cell["regime"]]
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
  model = build_model(recipe, len(class_names), steps_per_epoch)
  scorer = _Scorer(model)
  curve = []

  class ValidationCurve(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      metrics = scorer.mean_iou(val[0], val[1], len(class_names))
      curve.append(
        {
          "epoch": epoch + 1,
          "loss": float((logs or {}).get("loss", float("nan"))),
          "val_mean_iou": metrics["mean_iou"],
          "seconds": round(time.monotonic() - started, 2),
        }
      )

  model.fit(
    dataset,
    epochs=args.epochs,
    steps_per_epoch=steps_per_epoch,
    callbacks=[ValidationCurve()],
    verbose=0,
    shuffle=False,
  )
  train_seconds = time.monotonic() - started

  num_classes = len(class_names)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  periods = sorted({LAST_STRIDE[cell["variant"]], NETWORK_STRIDE})
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
  metrics = segmentation_metrics(confusion, class_names)
  record = {
    "id": cell["id"],
    "regime": cell["regime"],
    "variant": cell["variant"],
    "upsampling": cell["upsampling"],
    "seed": cell["seed"],
    "test_mean_iou": metrics["mean_iou"],
    "test_pixel_accuracy": metrics["pixel_accuracy"],
    "test_per_class_iou": metrics["per_class_iou"],
    "val_curve": curve,
    "checkerboard": {
      "period": LAST_STRIDE[cell["variant"]],
      "share": energy[LAST_STRIDE[cell["variant"]]][0] / max(energy[LAST_STRIDE[cell["variant"]]][1], 1e-30),
      "share_period32": energy[NETWORK_STRIDE][0] / max(energy[NETWORK_STRIDE][1], 1e-30),
    },
    "train_images": small_train_images(args) if cell["regime"] == "small" else args.train_images,
    "steps": steps_per_epoch * args.epochs,
    "parameters": int(model.count_params()),
    "macs_per_pixel": round(macs_per_pixel(model, NETWORK_STRIDE * 16)),
    "command": cell_command(args, cell["id"]),
    "train_seconds": round(train_seconds, 1),
    "seconds": round(time.monotonic() - started, 1),
    "settings": cell_settings(args),
  }
  keras.backend.clear_session()
  gc.collect()
  return record, example, predicted
