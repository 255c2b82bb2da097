"""What model.wrap learns about the user's Keras model before writing anything, by reading and probing it.

Its single image input (fixed size or not, bands), what its last layer
returns (logits, softmax, sigmoid) against the class list, the smallest size
multiple it runs at and its output stride (from probe batches of random
pixels), and whether its scores are finite probabilities when declared so.
Every refusal is a ``WrapError`` whose message says how to fix it.
"""

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from model.text import one_line
from model.wrap.common import WrapError, output_stride, probe_images, search_multiple


def detect_output(model: Any) -> str:
  """'softmax' or 'sigmoid' when the model's last layer applies one, else 'logits'."""
  layer = model.outputs[0]._keras_history.operation
  if isinstance(layer, keras.layers.Softmax):
    return "softmax"
  name = getattr(getattr(layer, "activation", None), "__name__", "")
  return name if name in ("softmax", "sigmoid") else "logits"


def model_input(model: Any) -> tuple[tuple[int, int] | None, int]:
  """(fixed (H, W) or None, channels) from the model's single image input."""
  if len(model.inputs) != 1 or len(model.outputs) != 1:
    raise WrapError(
      f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
      "wrap a model with one image input and one per-pixel score output"
    )
  shape = tuple(model.inputs[0].shape)
  if len(shape) != 4 or shape[-1] is None:
    raise WrapError(
      f"the model's input shape is {shape}; expected (batch, height, width, channels) with known channels"
    )
  height, width = shape[1], shape[2]
  if (height is None) != (width is None):
    raise WrapError(
      f"the model's input shape {shape} fixes one side only; rebuild it with both sides fixed or both None"
    )
  return (None if height is None else (int(height), int(width))), int(shape[-1])


def probe_inputs(
  batch: int,
  height: int,
  width: int,
  channels: int,
  dtype: npt.DTypeLike,
  normalise: Callable[[np.ndarray], Any],
  seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  images = probe_images(batch, height, width, channels, dtype, seed)
  return images, keras.ops.convert_to_numpy(normalise(images.astype(np.float32)))


def run_probe(model: Any, inputs: np.ndarray) -> tuple[np.ndarray, int]:
  """Output array and its stride for one probe; raises WrapError describing why the output does not fit."""
  outputs = model(inputs, training=False)
  if isinstance(outputs, (list, tuple, dict)):
    raise WrapError("the model returns several outputs; wrap a model with one per-pixel score output")
  outputs = keras.ops.convert_to_numpy(outputs)
  if outputs.ndim != 4 or outputs.shape[0] != inputs.shape[0]:
    raise WrapError(
      f"the model returns shape {outputs.shape} for input {inputs.shape}; expected [N, H/s, W/s, classes]"
    )
  return outputs, output_stride(inputs, outputs, " ('same'-padded convolutions)")


def find_geometry(
  model: Any,
  fixed_size: tuple[int, int] | None,
  channels: int,
  dtype: npt.DTypeLike,
  normalise: Callable[[np.ndarray], Any],
  size_multiple: int | None = None,
) -> tuple[int, int]:
  """(size multiple, output stride): the smallest multiple at which the model runs, checked by probing."""
  if fixed_size is not None:
    _, inputs = probe_inputs(1, *fixed_size, channels, dtype, normalise)
    try:
      return 1, run_probe(model, inputs)[1]
    except WrapError:
      raise
    except Exception as exc:
      raise WrapError(f"the model fails on its own fixed input size {fixed_size}: {_short(exc)}") from None

  def stride_at(height: int, width: int, seed: int) -> int:
    return run_probe(model, probe_inputs(1, height, width, channels, dtype, normalise, seed)[1])[1]

  return search_multiple(stride_at, size_multiple)


def _short(exc: BaseException) -> str:
  return f"{type(exc).__name__}: {one_line(exc, 200)}"
