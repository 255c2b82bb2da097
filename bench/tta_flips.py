"""Is test-time flipping worth 4x the model time? Measure before building it.

    python -m bench.tta_flips --checkpoint runs/reproduce/default/best.keras --data runs/reproduce/mosaic_test

Scores one trained checkpoint on a held-out split twice: as the pipeline
runs it (one forward pass, argmax), and with the softmax averaged over the
four flips (identity, left-right, up-down, both) before the argmax. Prints
and returns mean IoU, mean boundary F1 (2 px) and model milliseconds per
image for both, and the gain. The issue's rule: ship ``--tta flips`` only if
the gain beats the seed-to-seed noise of the decoder table.
"""

import argparse
import json
import os
import time

import numpy as np


def _flips(images):
  import tensorflow as tf

  return [images, tf.reverse(images, [2]), tf.reverse(images, [1]), tf.reverse(images, [1, 2])]


def _unflip(index, probabilities):
  import tensorflow as tf

  axes = [[], [2], [1], [1, 2]][index]
  return tf.reverse(probabilities, axes) if axes else probabilities


def score(checkpoint: str, data: str, split: str = "test", batch: int = 16) -> dict:
  import keras
  import tensorflow as tf

  import model.network.layers  # noqa: F401  (registers the custom layers a checkpoint names)
  from model.data.data import evaluation_dataset
  from model.metrics import confusion_matrix, segmentation_metrics
  from model.training.boundary import DEFAULT_TOLERANCE, BoundaryF1Mean, boundary_f1

  model = keras.models.load_model(checkpoint)
  classes = int(model.output_shape[-1])
  run_json = os.path.join(os.path.dirname(checkpoint), "run.json")
  with open(run_json) as handle:  # the checkpoint's own run says how its images are stored (uint8 or uint16)
    dtype = (json.load(handle).get("input") or {}).get("dtype", "uint8")
  dataset, _ = evaluation_dataset(data, split, channels=int(model.input_shape[-1]), dtype=dtype)

  @tf.function(reduce_retracing=True)
  def plain(images):
    return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32), -1)

  @tf.function(reduce_retracing=True)
  def flipped(images):
    total = 0.0
    for index, view in enumerate(_flips(images)):
      total += _unflip(index, tf.nn.softmax(tf.cast(model(view, training=False), tf.float32), -1))
    return total / 4.0

  modes = {"plain": plain, "flips": flipped}
  confusion = {mode: np.zeros((classes, classes), np.int64) for mode in modes}
  boundary = {mode: BoundaryF1Mean(classes) for mode in modes}
  seconds = dict.fromkeys(modes, 0.0)
  images, traced = 0, set()
  for images_batch, masks in dataset.batch(batch):
    masks = masks.numpy()
    images += len(masks)
    for mode, function in modes.items():
      if (mode, tuple(images_batch.shape)) not in traced:  # a shape's first call traces: run it once untimed
        traced.add((mode, tuple(images_batch.shape)))
        function(images_batch)
      started = time.perf_counter()
      predicted = np.argmax(function(images_batch).numpy(), -1)
      seconds[mode] += time.perf_counter() - started
      for truth, prediction in zip(masks, predicted):
        confusion[mode] += confusion_matrix(truth, prediction, classes)
        boundary[mode].add(boundary_f1(truth, prediction, classes, DEFAULT_TOLERANCE))
  result = {"checkpoint": checkpoint, "data": data, "split": split, "images": images}
  names = [str(index) for index in range(classes)]
  for mode in modes:
    metrics = segmentation_metrics(confusion[mode])
    result[mode] = {
      "mean_iou": round(float(metrics["mean_iou"]), 4),
      "worst_class_iou": round(min(v for v in metrics["per_class_iou"].values() if v is not None), 4),
      "mean_boundary_f1": round(boundary[mode].result(names, DEFAULT_TOLERANCE)["mean_boundary_f1"], 4),
      "model_ms_per_image": round(1000 * seconds[mode] / images, 2),
    }
  result["gain"] = {
    key: round(result["flips"][key] - result["plain"][key], 4) for key in ("mean_iou", "mean_boundary_f1")
  }
  result["cost"] = round(result["flips"]["model_ms_per_image"] / result["plain"]["model_ms_per_image"], 2)
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True, help="a model.train best.keras")
  parser.add_argument("--data", required=True, help="dataset directory with a held-out split")
  parser.add_argument("--split", default="test")
  parser.add_argument("--batch", type=int, default=16)
  args = parser.parse_args(argv)
  result = score(args.checkpoint, args.data, args.split, args.batch)
  print(json.dumps(result, indent=1))
  return result


if __name__ == "__main__":
  main()
