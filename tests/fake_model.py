"""A tiny contract-conforming exported model for fast, deterministic tests.

It follows docs/CONTRACTS.md exactly (``segment`` tf.function, the
``serving_default`` and ``serving_mixed_float16`` signatures, ``card.json``)
but classifies pixels by a colour rule on a 5x5 box mean, so it has a real
receptive field (radius 2) while staying integer-exact: with a tile overlap of
at least 4 the stitched result must equal whole-image inference bit for bit.

Classes: 0 dark (box-mean max channel < 64), 1 red, 2 green, 3 blue (the
dominant channel of the box mean, first wins ties).

The same rule works for any input spec (``build_fake_model(..., channels=C,
dtype=...)``): class 0 when the brightest band's box mean is below ``dark``
(64 by default), else 1 + the dominant band, so a one-band model has two
classes and a four-band one five.
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


DARK = 64


def band_classes(channels):
  """Class list of the band rule for a C-band model (the RGB one for C=3)."""
  if channels == 3:
    return CLASSES
  rng = np.random.default_rng(channels)
  return [{"id": 0, "name": "dark", "color": [20, 20, 20]}] + [
    {"id": i + 1, "name": f"band{i}", "color": [int(c) for c in rng.integers(40, 240, size=3)]} for i in range(channels)
  ]


def _input_signature(channels, dtype):
  return [tf.TensorSpec([None, None, None, channels], tf.as_dtype(dtype), name="images")]


class ColourRuleSegmenter(tf.Module):
  """Pure-TF module with the exported-model interface."""

  def __init__(
    self, poison_value=None, channels=3, dtype="uint8", dark=DARK, signature_channels=None, signature_dtype=None
  ):
    super().__init__()
    self.num_classes = tf.Variable(channels + 1, trainable=False, dtype=tf.int32)
    self._poison = poison_value
    self._full = float(np.iinfo(dtype).max)
    self._dark = float(dark)
    signature = _input_signature(signature_channels or channels, signature_dtype or dtype)
    self.segment = tf.function(self._compute, input_signature=signature)
    self.serve_mixed = tf.function(self._compute, input_signature=signature)

  def _compute(self, images):
    if self._poison is not None:
      # Fault injection for tests: any image that is entirely this value fails the whole call.
      poisoned = tf.reduce_any(tf.reduce_all(tf.equal(images, self._poison), axis=[1, 2, 3]))
      tf.debugging.Assert(tf.logical_not(poisoned), ["poisoned input"])
    x = tf.cast(images, tf.float32)
    size = 2 * RADIUS + 1
    box = tf.ones([size, size, x.shape[-1], 1], tf.float32)
    sums = tf.nn.depthwise_conv2d(x, box, strides=[1, 1, 1, 1], padding="SAME")
    ones = tf.ones_like(x[..., :1])
    counts = tf.nn.conv2d(ones, tf.ones([size, size, 1, 1], tf.float32), strides=1, padding="SAME")
    means = sums / counts
    brightest = tf.reduce_max(means, axis=-1)
    dominant = tf.cast(tf.argmax(means, axis=-1), tf.int32) + 1
    class_ids = tf.where(brightest < self._dark, tf.zeros_like(dominant), dominant)
    confidence = tf.clip_by_value(brightest / self._full, 0.0, 1.0)
    return {"class_ids": tf.cast(class_ids, tf.uint8), "confidence": confidence}


def card(name="fake-colour-rule", version="0.0.1", classes=None, channels=3, dtype="uint8"):
  classes = band_classes(channels) if classes is None else classes
  color = {1: "grey", 3: "RGB"}.get(channels, "bands")
  return {
    "name": name,
    "version": version,
    "format": "deconvseg-model/1",
    "architecture": {"variant": "colour-rule", "encoder": "none", "parameters": 0, "upsampling": "none"},
    "stride": 1,
    "input": {"dtype": dtype, "channels": channels, "color": color, "normalization": {"scale": 1.0, "offset": 0.0}},
    "classes": classes,
    "signatures": {
      "serving_default": {"input": "images", "outputs": ["class_ids", "confidence"]},
      "serving_mixed_float16": {"input": "images", "outputs": ["class_ids", "confidence"]},
    },
    "created": "2026-01-01T00:00:00Z",
  }


def build_fake_model(
  model_dir,
  classes=None,
  poison_value=None,
  channels=3,
  dtype="uint8",
  dark=DARK,
  signature_channels=None,
  signature_dtype=None,
):
  """Exports the fake model to MODEL_DIR/{saved_model,card.json}; returns MODEL_DIR.

  With ``poison_value``, a call fails when any image in it is entirely that value.
  ``channels``/``dtype`` are the input spec (card and signature);
  ``signature_channels``/``signature_dtype`` make the signature disagree with
  the card, as a mixed-up export would.
  """
  module = ColourRuleSegmenter(poison_value, channels, dtype, dark, signature_channels, signature_dtype)
  tf.saved_model.save(
    module,
    os.path.join(model_dir, "saved_model"),
    signatures={"serving_default": module.segment, "serving_mixed_float16": module.serve_mixed},
  )
  with open(os.path.join(model_dir, "card.json"), "w") as f:
    json.dump(card(classes=classes, channels=channels, dtype=dtype), f, indent=2)
  return str(model_dir)


def reference_segment(pixels: np.ndarray, dark=DARK) -> np.ndarray:
  """Whole-image class map of the fake model, computed in numpy (test oracle); pixels [H, W, C]."""
  x = pixels.astype(np.float64)
  h, w, c = x.shape
  padded = np.zeros((h + 2 * RADIUS, w + 2 * RADIUS, c))
  padded[RADIUS : RADIUS + h, RADIUS : RADIUS + w] = x
  valid = np.zeros((h + 2 * RADIUS, w + 2 * RADIUS))
  valid[RADIUS : RADIUS + h, RADIUS : RADIUS + w] = 1
  sums = np.zeros((h, w, c))
  counts = np.zeros((h, w))
  for dy in range(2 * RADIUS + 1):
    for dx in range(2 * RADIUS + 1):
      sums += padded[dy : dy + h, dx : dx + w]
      counts += valid[dy : dy + h, dx : dx + w]
  means = sums / counts[..., None]
  ids = np.argmax(means, axis=-1) + 1
  ids[means.max(axis=-1) < dark] = 0
  return ids.astype(np.uint8)
