"""Encoders: functions from an image tensor to features at strides 2, 4, 8, 16 and 32.

Each returns a dict {2: tensor, 4: tensor, ..., 32: tensor} built on the given
(already normalised) input, so the decoders do not care which backbone runs:
FCN-32s/16s/8s read strides 32 to 8, the finer decoders (FCN-4s/2s and the
full deconvolution decoder) read down to stride 2.
"""

import os
from collections.abc import Callable, Sequence
from typing import Any

import keras

ENCODERS = ("compact", "vgg16", "mobilenetv2")
FEATURE_STRIDES = (2, 4, 8, 16, 32)


def _conv_block(inputs: Any, filters: int, strides: int, name: str) -> Any:
  outputs = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(
    inputs
  )
  outputs = keras.layers.BatchNormalization(name=f"{name}_bn")(outputs)
  return keras.layers.ReLU(name=f"{name}_relu")(outputs)


def compact_encoder(inputs: Any, width: int = 32) -> dict[int, Any]:
  """A plain VGG-like stack of 3x3 conv/BN/ReLU, two convs per stage, stride 2 per stage.

  About 1.2M parameters at width 32: small enough to train to a useful model in
  minutes on two CPU cores, deep enough (receptive field > 200 px) for textures.
  """
  stage_filters = (width, int(width * 1.5), width * 2, width * 4, width * 8)
  features: dict[int, Any] = {}
  outputs = inputs
  for stage, filters in enumerate(stage_filters, start=1):
    outputs = _conv_block(outputs, filters, 2, f"stage{stage}_a")
    outputs = _conv_block(outputs, filters, 1, f"stage{stage}_b")
    features[2**stage] = outputs
  return features


def _load_local_weights(backbone: Any, weights_path: str | None) -> None:
  if weights_path is None:
    return
  if not os.path.exists(weights_path):
    raise ValueError(f"backbone weights file not found: {weights_path} (nothing is downloaded; pass a local file)")
  backbone.load_weights(weights_path)


def _application_encoder(
  application: Callable[..., Any], inputs: Any, weights_path: str | None, layer_names: Sequence[str]
) -> dict[int, Any]:
  """A keras.applications backbone without its top (local weights only), the named layers at strides 2 to 32."""
  backbone = application(include_top=False, weights=None, input_tensor=inputs)
  _load_local_weights(backbone, weights_path)
  return {stride: backbone.get_layer(name).output for stride, name in zip(FEATURE_STRIDES, layer_names)}


def vgg16_encoder(inputs: Any, weights_path: str | None = None) -> dict[int, Any]:
  """keras.applications VGG16 (the FCN paper's backbone): pool1 to pool5 as the stride-2 to 32 features."""
  layers = ("block1_pool", "block2_pool", "block3_pool", "block4_pool", "block5_pool")
  return _application_encoder(keras.applications.VGG16, inputs, weights_path, layers)


def mobilenetv2_encoder(inputs: Any, weights_path: str | None = None) -> dict[int, Any]:
  """keras.applications MobileNetV2: the last block at each stride (the expansion before the next
  stride-2 block at strides 2 and 4, where no residual add exists yet)."""
  layers = ("block_1_expand_relu", "block_3_expand_relu", "block_5_add", "block_12_add", "out_relu")
  return _application_encoder(keras.applications.MobileNetV2, inputs, weights_path, layers)


def build_encoder(name: str, inputs: Any, weights_path: str | None = None, width: int = 32) -> dict[int, Any]:
  if name == "compact":
    if weights_path is not None:
      raise ValueError("the compact encoder has no pretrained weights; drop --encoder_weights")
    return compact_encoder(inputs, width=width)
  if name == "vgg16":
    return vgg16_encoder(inputs, weights_path)
  if name == "mobilenetv2":
    return mobilenetv2_encoder(inputs, weights_path)
  raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODERS}")
