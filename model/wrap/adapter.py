"""The served graph model.wrap builds around the user's model, and the check of the written SavedModel against it.

normalise -> pad -> the user's model -> logits -> resize -> crop, as one Keras
model (``build_adapter``); ``verify`` reloads the written SavedModel with
TensorFlow alone and compares it with the in-memory adapter on a probe batch.
"""

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model.network.fcn import normalization_layer
from model.network.layers import CropToReference, PadToMultiple, PadToSize, ResizeUpsample, ScoresToLogits
from model.wrap.probe import WrapError, probe_inputs


def build_adapter(
  model: Any,
  normalization: Mapping[str, Any],
  channels: int,
  fixed_size: tuple[int, int] | None,
  multiple: int,
  stride: int,
  kind: str,
  padding: str,
) -> Any:
  """normalise -> pad -> the user's model -> logits -> resize to the padded size -> crop, as one Keras model."""
  images = keras.Input(shape=(None, None, channels), name="images")
  normalised = normalization_layer(normalization, channels)(images)
  if fixed_size is not None:
    padded = PadToSize(*fixed_size, mode=padding, name="pad_to_input_size")(normalised)
  else:
    padded = PadToMultiple(multiple, mode=padding, name="pad_to_multiple")(normalised)
  logits = ScoresToLogits(kind, name="to_logits")(model(padded))
  if stride > 1:
    logits = ResizeUpsample(stride, name="resize_logits")(logits)
  logits = CropToReference(name="crop_to_input")([logits, images])
  logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
  return keras.Model(images, logits, name=f"wrapped_{model.name}")


def verify(
  saved_model_dir: str,
  adapter: Any,
  input_block: Mapping[str, Any],
  fixed_size: tuple[int, int] | None,
  multiple: int,
  num_classes: int,
) -> None:
  """Reload the SavedModel with TensorFlow alone and compare it with the in-memory adapter on a probe."""
  loaded = tf.saved_model.load(saved_model_dir)
  if int(loaded.num_classes.numpy()) != num_classes:
    raise WrapError(f"the written model reports {int(loaded.num_classes.numpy())} classes, expected {num_classes}")
  if fixed_size is not None:
    height, width = max(1, fixed_size[0] - 3), max(1, fixed_size[1] - 5)
  else:
    height, width = 3 * multiple + 5, 2 * multiple + 3  # off the multiple, so padding and cropping run
  dtype = np.dtype(input_block["dtype"])
  images, _ = probe_inputs(2, height, width, input_block["channels"], dtype, lambda x: x, seed=2)
  served = loaded.segment(images)
  logits = keras.ops.convert_to_numpy(adapter(images.astype(np.float32), training=False)).astype(np.float64)
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  ordered = np.sort(probabilities, axis=-1)
  decided = (ordered[..., -1] - ordered[..., -2]) > 1e-4  # near-ties may round either way
  class_ids = served["class_ids"].numpy()
  if class_ids.shape != images.shape[:3] or served["confidence"].shape != images.shape[:3]:
    raise WrapError(f"the written model returns shape {class_ids.shape} for input {images.shape}")
  if np.any(class_ids[decided] != probabilities.argmax(-1)[decided]):
    raise WrapError("the written SavedModel disagrees with the in-memory model on a probe batch")
  if not np.allclose(served["confidence"].numpy(), probabilities.max(-1), atol=1e-4):
    raise WrapError("the written SavedModel's confidence disagrees with the in-memory model on a probe batch")
  empty = loaded.segment(np.zeros((0, height, width, input_block["channels"]), dtype))
  if tuple(empty["class_ids"].shape) != (0, height, width):
    raise WrapError(f"the written model returns {tuple(empty['class_ids'].shape)} for an empty batch")
