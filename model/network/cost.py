"""What a network costs per pixel: multiply-accumulates of its convolutions and deconvolutions.

The decoder comparison (``model.ablation --grid decoders``) weighs quality
against cost, and wall time on one machine is only half of that story: the
count of multiply-accumulates per input pixel says how a variant scales on
any engine. Only the layers that dominate are counted (convolutions,
depthwise convolutions and transposed convolutions); normalisation,
activations and additions are a rounding error beside them.
"""

from typing import Any

import keras

from model.network.layers import BilinearDeconv2D


def _spatial(shape: tuple[Any, ...]) -> int:
  return int(shape[1]) * int(shape[2])


def _layer_macs(layer: Any, input_shape: tuple[Any, ...], output_shape: tuple[Any, ...]) -> int:
  if isinstance(layer, BilinearDeconv2D):
    # every input pixel scatters a k x k kernel over C_in x C_out channels
    channels = int(input_shape[-1])
    return _spatial(input_shape) * layer.kernel_size**2 * channels * channels
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    height, width = layer.kernel_size
    return _spatial(output_shape) * height * width * int(input_shape[-1]) * layer.depth_multiplier
  if isinstance(layer, keras.layers.Conv2D):
    height, width = layer.kernel_size
    groups = getattr(layer, "groups", 1) or 1
    return _spatial(output_shape) * height * width * int(input_shape[-1]) // groups * layer.filters
  return 0


def macs_per_pixel(model: keras.Model, size: int = 512) -> float:
  """Multiply-accumulates per input pixel for a ``size`` x ``size`` image (a multiple of the network stride)."""
  channels = int(model.inputs[0].shape[-1])
  fixed = keras.models.clone_model(model, input_tensors=keras.Input((size, size, channels)))
  total = 0
  for layer in fixed.layers:
    if isinstance(layer, keras.layers.InputLayer):
      continue
    inputs = layer.input[0] if isinstance(layer.input, (list, tuple)) else layer.input
    total += _layer_macs(layer, tuple(inputs.shape), tuple(layer.output.shape))
  return total / (size * size)
