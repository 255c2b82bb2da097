"""Bilinear-initialised deconvolution and the small tensor-op layers the FCN needs.

Keras 3 cannot apply raw tf ops to symbolic tensors and Lambda layers do not
survive a SavedModel round trip cleanly, so every such op is a Layer here.
The layers use ``keras.ops`` only, so the same architecture builds under any
Keras backend (TensorFlow for training and export; JAX or PyTorch where a
machine has only those, as the GPU ceiling bench does). Two calls stay
TensorFlow's under that backend: ``PadToSize``'s graph-side size check, and
the bilinear resize, because ``keras.ops.image.resize`` needs static sizes.
"""

from typing import Any

import keras
import numpy as np
import numpy.typing as npt
from keras import ops

if keras.backend.backend() == "tensorflow":
  import tensorflow as tf
else:  # JAX or PyTorch: no graph-side assertion op to build
  tf = None


# A Keras shape: (batch, height, width, channels) with None where unknown.
Shape = tuple[Any, ...]


def deconvolution_kernel_size(factor: int) -> int:
  """Kernel size 2f - f%2: divisible-enough by the stride to avoid checkerboards (Odena et al. 2016)."""
  return 2 * factor - factor % 2


def _scaled(size: int | None, factor: int) -> int | None:
  """A static dimension times factor, keeping unknown (None) dimensions unknown."""
  return None if size is None else size * factor


def bilinear_kernel(factor: int, channels: int, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
  """The FCN bilinear upsampling kernel in Keras layout (kh, kw, out_channels, in_channels).

  With stride `factor` and `same` padding a transposed convolution with this
  kernel equals bilinear interpolation away from the borders; channel i only
  feeds channel i, so it upsamples each class score map independently.
  """
  if int(factor) < 1:
    raise ValueError(f"upsampling factor must be a positive integer, got {factor}")
  if int(channels) < 1:
    raise ValueError(f"channels must be a positive integer, got {channels}")
  size = deconvolution_kernel_size(int(factor))
  half = (size + 1) // 2
  centre = half - 1 if size % 2 == 1 else half - 0.5
  grid = np.arange(size, dtype=np.float64)
  profile = 1.0 - np.abs(grid - centre) / half
  weights = np.outer(profile, profile)
  kernel = np.zeros((size, size, channels, channels), dtype=np.float64)
  for channel in range(channels):
    kernel[:, :, channel, channel] = weights
  return kernel.astype(dtype)


class BilinearKernelInitializer(keras.initializers.Initializer):
  """Initialises a (k, k, C, C) kernel with the bilinear kernel for `factor`."""

  def __init__(self, factor: int) -> None:
    self.factor = int(factor)

  def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
    size, _, channels_out, channels_in = shape
    if channels_out != channels_in or size != deconvolution_kernel_size(self.factor):
      raise ValueError(
        f"bilinear kernel needs shape (k, k, C, C) with k={deconvolution_kernel_size(self.factor)}, got {shape}"
      )
    return keras.ops.convert_to_tensor(bilinear_kernel(self.factor, channels_in), dtype=dtype or "float32")

  def get_config(self) -> dict[str, Any]:
    return {"factor": self.factor}


@keras.saving.register_keras_serializable(package="deconvseg")
class BilinearDeconv2D(keras.layers.Layer):
  """Transposed convolution upsampling by an integer factor, C channels to C channels.

  kernel 2f - f%2, stride f, `same` padding, so the output is exactly input x f.
  `initialization="bilinear"` starts it as bilinear interpolation (the FCN
  recipe); `"random"` starts it from a He-normal kernel, for the ablation.
  `trainable=False` freezes it as a fixed bilinear upsampler.
  """

  INITIALIZATIONS = ("bilinear", "random")

  def __init__(self, factor: int, initialization: str = "bilinear", use_bias: bool = False, **kwargs: Any) -> None:
    super().__init__(**kwargs)
    if int(factor) < 1:
      raise ValueError(f"upsampling factor must be a positive integer, got {factor}")
    if initialization not in self.INITIALIZATIONS:
      raise ValueError(f"initialization must be one of {self.INITIALIZATIONS}, got {initialization!r}")
    self.factor = int(factor)
    self.initialization = initialization
    self.use_bias = bool(use_bias)
    self.kernel_size = deconvolution_kernel_size(self.factor)

  def build(self, input_shape: Shape) -> None:
    channels = input_shape[-1]
    if channels is None:
      raise ValueError("BilinearDeconv2D needs a known channel count")
    if self.initialization == "bilinear":
      initializer = BilinearKernelInitializer(self.factor)
    else:
      initializer = keras.initializers.HeNormal()
    self.kernel = self.add_weight(
      name="kernel", shape=(self.kernel_size, self.kernel_size, channels, channels), initializer=initializer
    )
    self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros") if self.use_bias else None

  def call(self, inputs: Any) -> Any:
    outputs = keras.ops.conv_transpose(inputs, self.kernel, strides=self.factor, padding="same")
    if self.bias is not None:
      outputs = outputs + self.bias
    return outputs

  def compute_output_shape(self, input_shape: Shape) -> Shape:
    batch, height, width, channels = input_shape
    return (batch, _scaled(height, self.factor), _scaled(width, self.factor), channels)

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update({"factor": self.factor, "initialization": self.initialization, "use_bias": self.use_bias})
    return config


@keras.saving.register_keras_serializable(package="deconvseg")
class ResizeUpsample(keras.layers.Layer):
  """Plain bilinear resize by an integer factor (no weights): the ablation baseline."""

  def __init__(self, factor: int, **kwargs: Any) -> None:
    super().__init__(**kwargs)
    if int(factor) < 1:
      raise ValueError(f"upsampling factor must be a positive integer, got {factor}")
    self.factor = int(factor)

  def call(self, inputs: Any) -> Any:
    shape = ops.shape(inputs)
    size = (shape[1] * self.factor, shape[2] * self.factor)
    if tf is not None:  # keras.ops.image.resize wants Python ints; TensorFlow graphs have dynamic sizes
      resized = tf.image.resize(inputs, size, method="bilinear")
    else:
      resized = ops.image.resize(inputs, size, interpolation="bilinear")
    return ops.cast(resized, inputs.dtype)

  def compute_output_shape(self, input_shape: Shape) -> Shape:
    batch, height, width, channels = input_shape
    return (batch, _scaled(height, self.factor), _scaled(width, self.factor), channels)

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update({"factor": self.factor})
    return config


def _symmetric_indices(length: Any, padded_length: Any) -> Any:
  """Indices 0..L-1 then mirrored back and forth: symmetric padding that works for any L >= 1."""
  period = 2 * length
  positions = ops.arange(padded_length) % period
  return ops.where(positions < length, positions, period - 1 - positions)


PAD_MODES = ("symmetric", "zero")


def _pad_bottom_right(inputs: Any, padded_height: Any, padded_width: Any, mode: str) -> Any:
  """Pads H and W (bottom/right) to the given sizes: mirrored (any pad size) or with zeros."""
  shape = ops.shape(inputs)
  height, width = shape[1], shape[2]
  if mode == "zero":
    return ops.pad(inputs, [[0, 0], [0, padded_height - height], [0, padded_width - width], [0, 0]])
  outputs = ops.take(inputs, _symmetric_indices(height, padded_height), axis=1)
  return ops.take(outputs, _symmetric_indices(width, padded_width), axis=2)


def _check_pad_mode(mode: str) -> str:
  if mode not in PAD_MODES:
    raise ValueError(f"padding mode must be one of {PAD_MODES}, got {mode!r}")
  return mode


@keras.saving.register_keras_serializable(package="deconvseg")
class PadToMultiple(keras.layers.Layer):
  """Pads height and width (bottom/right) up to a multiple of the network stride.

  Mirroring (the default) keeps texture statistics at the border, unlike
  zeros, and this index-based version works even when the pad exceeds the
  image size; ``mode="zero"`` is for models trained with zero padding.
  """

  def __init__(self, multiple: int, mode: str = "symmetric", **kwargs: Any) -> None:
    super().__init__(**kwargs)
    if int(multiple) < 1:
      raise ValueError(f"multiple must be a positive integer, got {multiple}")
    self.multiple = int(multiple)
    self.mode = _check_pad_mode(mode)

  def call(self, inputs: Any) -> Any:
    shape = ops.shape(inputs)
    height, width = shape[1], shape[2]
    padded_height = (height + self.multiple - 1) // self.multiple * self.multiple
    padded_width = (width + self.multiple - 1) // self.multiple * self.multiple
    return _pad_bottom_right(inputs, padded_height, padded_width, self.mode)

  def compute_output_shape(self, input_shape: Shape) -> Shape:
    batch, height, width, channels = input_shape
    return (batch, self._round_up(height), self._round_up(width), channels)

  def _round_up(self, size: int | None) -> int | None:
    return None if size is None else -(-size // self.multiple) * self.multiple

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update({"multiple": self.multiple, "mode": self.mode})
    return config


@keras.saving.register_keras_serializable(package="deconvseg")
class PadToSize(keras.layers.Layer):
  """Pads height and width (bottom/right) to a model's fixed input size; larger inputs fail with advice.

  Graph-side refusal, because the size is only known per call: in the
  pipeline the message lands in the failure record of the offending tile.
  """

  def __init__(self, height: int, width: int, mode: str = "symmetric", **kwargs: Any) -> None:
    super().__init__(**kwargs)
    self.height, self.width = int(height), int(width)
    self.mode = _check_pad_mode(mode)

  def call(self, inputs: Any) -> Any:
    if tf is not None:
      self._check_size(inputs)
    return _pad_bottom_right(inputs, self.height, self.width, self.mode)

  def _check_size(self, inputs: Any) -> None:
    tf.debugging.assert_less_equal(
      tf.shape(inputs)[1:3],
      tf.constant([self.height, self.width]),
      message=(
        f"the image is larger than the model's fixed input {self.height}x{self.width}; run the pipeline "
        f"with --tile_size {min(self.height, self.width)} --whole_image_pixels 0 so every tile fits"
      ),
    )

  def compute_output_shape(self, input_shape: Shape) -> Shape:
    return (input_shape[0], self.height, self.width, input_shape[3])

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update({"height": self.height, "width": self.width, "mode": self.mode})
    return config


@keras.saving.register_keras_serializable(package="deconvseg")
class ScoresToLogits(keras.layers.Layer):
  """A model's last activation turned back into logits, so softmax of the result is its class probabilities.

  ``logits``: unchanged. ``softmax``: log(p), floored so zero probabilities
  stay finite (argmax is unchanged: the winner is at least 1/C). ``sigmoid``:
  one probability channel p becomes two classes [0, log(p) - log(1-p)],
  whose softmax is [1-p, p]. ``binary_logit``: one logit z becomes [0, z].
  Always float32: a floored log in float16 would underflow.
  """

  KINDS = ("logits", "softmax", "sigmoid", "binary_logit")
  FLOOR = 1e-12
  keep_float32 = True

  def __init__(self, kind: str, **kwargs: Any) -> None:
    kwargs["dtype"] = "float32"
    super().__init__(**kwargs)
    if kind not in self.KINDS:
      raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
    self.kind = kind

  def call(self, inputs: Any) -> Any:
    scores = ops.cast(inputs, "float32")
    if self.kind == "softmax":
      return ops.log(ops.maximum(scores, self.FLOOR))
    if self.kind == "logits":
      return scores
    if self.kind == "sigmoid":
      positive = ops.log(ops.maximum(scores, self.FLOOR)) - ops.log(ops.maximum(1.0 - scores, self.FLOOR))
    else:
      positive = scores
    return ops.concatenate([ops.zeros_like(positive), positive], axis=-1)

  def compute_output_shape(self, input_shape: Shape) -> Shape:
    channels = 2 if self.kind in ("sigmoid", "binary_logit") else input_shape[-1]
    return (*input_shape[:-1], channels)

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update({"kind": self.kind})
    return config


@keras.saving.register_keras_serializable(package="deconvseg")
class CropToReference(keras.layers.Layer):
  """Crops the first input's height and width (top-left) to those of the second input."""

  def call(self, inputs: Any) -> Any:
    tensor, reference = inputs
    shape = ops.shape(reference)
    return tensor[:, : shape[1], : shape[2], :]

  def compute_output_shape(self, input_shapes: tuple[Shape, Shape]) -> Shape:
    tensor_shape, reference_shape = input_shapes
    return (tensor_shape[0], reference_shape[1], reference_shape[2], tensor_shape[3])
