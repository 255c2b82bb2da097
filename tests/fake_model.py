"""A tiny contract-conforming exported model for fast, deterministic tests.

It follows docs/CONTRACTS.md exactly (``segment`` tf.function, the
``serving_default`` and ``serving_mixed_float16`` signatures, ``card.json``)
but classifies pixels by a colour rule on a 5x5 box mean, so it has a real
receptive field (radius 2) while staying integer-exact: with a tile overlap of
at least 4 the stitched result must equal whole-image inference bit for bit.

Classes: 0 dark (box-mean max channel < 64), 1 red, 2 green, 3 blue (the
dominant channel of the box mean, first wins ties).
"""
import json
import os

import numpy as np
import tensorflow as tf

CLASSES = [
    {"id": 0, "name": "dark", "color": [20, 20, 20]},
    {"id": 1, "name": "red", "color": [220, 40, 40]},
    {"id": 2, "name": "green", "color": [40, 200, 60]},
    {"id": 3, "name": "blue", "color": [40, 90, 220]},
]
RADIUS = 2


class ColourRuleSegmenter(tf.Module):
  """Pure-TF module with the exported-model interface."""

  def __init__(self, poison_value=None):
    super().__init__()
    self.num_classes = tf.Variable(len(CLASSES), trainable=False, dtype=tf.int32)
    self._poison = poison_value

  def _compute(self, images):
    if self._poison is not None:
      # Fault injection for tests: any image that is entirely this value fails the whole call.
      poisoned = tf.reduce_any(tf.reduce_all(tf.equal(images, self._poison), axis=[1, 2, 3]))
      tf.debugging.Assert(tf.logical_not(poisoned), ["poisoned input"])
    x = tf.cast(images, tf.float32)
    size = 2 * RADIUS + 1
    box = tf.ones([size, size, 3, 1], tf.float32)
    sums = tf.nn.depthwise_conv2d(x, box, strides=[1, 1, 1, 1], padding="SAME")
    ones = tf.ones_like(x[..., :1])
    counts = tf.nn.conv2d(ones, tf.ones([size, size, 1, 1], tf.float32), strides=1, padding="SAME")
    means = sums / counts
    brightest = tf.reduce_max(means, axis=-1)
    dominant = tf.cast(tf.argmax(means, axis=-1), tf.int32) + 1
    class_ids = tf.where(brightest < 64.0, tf.zeros_like(dominant), dominant)
    confidence = tf.clip_by_value(brightest / 255.0, 0.0, 1.0)
    return {"class_ids": tf.cast(class_ids, tf.uint8), "confidence": confidence}

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
  def segment(self, images):
    return self._compute(images)

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
  def serve_mixed(self, images):
    return self._compute(images)


def card(name="fake-colour-rule", version="0.0.1", classes=None):
  classes = CLASSES if classes is None else classes
  return {
      "name": name,
      "version": version,
      "format": "deconvseg-model/1",
      "architecture": {"variant": "colour-rule", "encoder": "none", "parameters": 0,
                       "upsampling": "none"},
      "stride": 1,
      "input": {"dtype": "uint8", "channels": 3, "color": "RGB",
                "normalization": {"scale": 1.0, "offset": 0.0}},
      "classes": classes,
      "signatures": {"serving_default": {"input": "images", "outputs": ["class_ids", "confidence"]},
                     "serving_mixed_float16": {"input": "images", "outputs": ["class_ids", "confidence"]}},
      "created": "2026-01-01T00:00:00Z",
  }


def build_fake_model(model_dir, classes=None, poison_value=None):
  """Exports the fake model to MODEL_DIR/{saved_model,card.json}; returns MODEL_DIR.

  With ``poison_value``, a call fails when any image in it is entirely that value.
  """
  module = ColourRuleSegmenter(poison_value)
  tf.saved_model.save(module, os.path.join(model_dir, "saved_model"),
                      signatures={"serving_default": module.segment,
                                  "serving_mixed_float16": module.serve_mixed})
  with open(os.path.join(model_dir, "card.json"), "w") as f:
    json.dump(card(classes=classes), f, indent=2)
  return str(model_dir)


def reference_segment(pixels: np.ndarray) -> np.ndarray:
  """Whole-image class map of the fake model, computed in numpy (test oracle)."""
  x = pixels.astype(np.float64)
  h, w = x.shape[:2]
  padded = np.zeros((h + 2 * RADIUS, w + 2 * RADIUS, 3))
  padded[RADIUS:RADIUS + h, RADIUS:RADIUS + w] = x
  valid = np.zeros((h + 2 * RADIUS, w + 2 * RADIUS))
  valid[RADIUS:RADIUS + h, RADIUS:RADIUS + w] = 1
  sums = np.zeros((h, w, 3))
  counts = np.zeros((h, w))
  for dy in range(2 * RADIUS + 1):
    for dx in range(2 * RADIUS + 1):
      sums += padded[dy:dy + h, dx:dx + w]
      counts += valid[dy:dy + h, dx:dx + w]
  means = sums / counts[..., None]
  ids = np.argmax(means, axis=-1) + 1
  ids[means.max(axis=-1) < 64] = 0
  return ids.astype(np.uint8)
