"""FCN-32s to FCN-2s (Long, Shelhamer, Darrell 2015) and a full deconvolution decoder, as functional Keras models.

FCN: score the deepest features with a 1x1 convolution, upsample 2x with a
bilinear-initialised deconvolution and fuse with scored skip features, one
stride at a time (16s stops at stride 16, 8s at 8, and the finer 4s and 2s
carry on to strides 4 and 2), then upsample the rest of the way in one
deconvolution. The finer the last fusion, the less of the boundary a single
bilinear kernel paints.

``deconvnet``: a learned upsampling path to full resolution in the spirit
of DeconvNet (Noh et al. 2015) and U-Net: at every stride from 16 to 1, a
bilinear-initialised 2x deconvolution of the decoder features, concatenated
with the matching encoder features (projected by a 1x1 convolution; at
stride 1, the normalised image itself), then a 3x3 convolution block. Its
widths taper with resolution so the stride-1 blocks stay cheap.

The model takes float images of any height and width with the data's own
channel count and value range (8-bit RGB, 16-bit greyscale, N-band
multispectral): it normalises them itself (a fixed scale/offset, or per-band
mean and standard deviation measured on the training split), pads to the
network stride, and crops the logits back.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from model.network.encoders import build_encoder
from model.network.layers import BilinearDeconv2D, CropToReference, PadToMultiple, ResizeUpsample
from model.network.variants import DECODER_WIDTHS, FCN_STRIDES, VARIANTS

UPSAMPLING = ("bilinear", "bilinear_frozen", "random", "resize")
UPSAMPLING_DESCRIPTIONS = {
  "bilinear": "bilinear-initialised learned deconvolution",
  "bilinear_frozen": "bilinear-initialised frozen deconvolution",
  "random": "randomly initialised learned deconvolution",
  "resize": "plain bilinear resize (no deconvolution)",
}
NETWORK_STRIDE = 32
NORMALIZATION = {"scale": 1.0 / 127.5, "offset": -1.0}


def normalization_layer(normalization: Mapping[str, Any], channels: int) -> Any:
  """``{"scale", "offset"}`` (the same for every band) or per-band ``{"mean", "std"}`` as one Keras layer."""
  if set(normalization) >= {"mean", "std"}:
    mean, std = list(normalization["mean"]), list(normalization["std"])
    if len(mean) != channels or len(std) != channels:
      raise ValueError(f"normalisation has {len(mean)} means and {len(std)} stds for {channels} channels")
    if min(std) <= 0:
      raise ValueError(f"normalisation std must be positive, got {std} (a constant band carries no information)")
    return keras.layers.Normalization(mean=mean, variance=[value * value for value in std], name="normalise")
  return keras.layers.Rescaling(normalization["scale"], normalization["offset"], name="normalise")


def upsampling_layer(kind: str, factor: int, name: str) -> Any:
  """One of the four upsampling choices compared in the ablation."""
  if kind == "bilinear":
    return BilinearDeconv2D(factor, initialization="bilinear", name=name)
  if kind == "bilinear_frozen":
    return BilinearDeconv2D(factor, initialization="bilinear", trainable=False, name=name)
  if kind == "random":
    return BilinearDeconv2D(factor, initialization="random", name=name)
  if kind == "resize":
    return ResizeUpsample(factor, name=name)
  raise ValueError(f"unknown upsampling {kind!r}; choose one of {UPSAMPLING}")


def _score(features: Any, num_classes: int, name: str) -> Any:
  # Zero-initialised skip scores make the fused net start as the coarser one (FCN training recipe).
  return keras.layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=name)(features)


def _fcn_decoder(features: dict[int, Any], num_classes: int, upsampling: str, strides: Sequence[int]) -> Any:
  """Scores fused at ``strides`` (coarsest first), then one upsampling by the last of them."""
  score = keras.layers.Conv2D(num_classes, 1, name=f"score{strides[0]}")(features[strides[0]])
  for coarse, fine in zip(strides, strides[1:]):
    score = upsampling_layer(upsampling, 2, f"upsample{coarse}_to_{fine}")(score)
    score = keras.layers.Add(name=f"fuse{fine}")([score, _score(features[fine], num_classes, f"score{fine}")])
  return upsampling_layer(upsampling, strides[-1], f"upsample{strides[-1]}")(score)


def _conv_block(inputs: Any, filters: int, name: str) -> Any:
  outputs = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(inputs)
  outputs = keras.layers.BatchNormalization(name=f"{name}_bn")(outputs)
  return keras.layers.ReLU(name=f"{name}_relu")(outputs)


def _deconvolution_decoder(features: dict[int, Any], image: Any, num_classes: int, upsampling: str, width: int) -> Any:
  """Stride 32 to 1 by 2x deconvolutions, each followed by fusion with the encoder stage at its stride."""
  scale = width / 32
  widths = {stride: max(4, int(round(channels * scale))) for stride, channels in DECODER_WIDTHS.items()}
  outputs = keras.layers.Conv2D(widths[16], 1, name="decoder32_project")(features[32])
  for stride in (16, 8, 4, 2, 1):
    outputs = upsampling_layer(upsampling, 2, f"decoder{stride}_upsample")(outputs)
    skip = features.get(stride, image)
    skip = keras.layers.Conv2D(widths[stride], 1, name=f"decoder{stride}_skip")(skip)
    outputs = keras.layers.Concatenate(name=f"decoder{stride}_fuse")([outputs, skip])
    outputs = _conv_block(outputs, widths[stride], f"decoder{stride}")
  return keras.layers.Conv2D(num_classes, 1, name="score1")(outputs)


def build_fcn(
  num_classes: int,
  variant: str = "fcn8s",
  encoder: str = "compact",
  upsampling: str = "bilinear",
  encoder_weights: str | None = None,
  width: int = 32,
  channels: int = 3,
  normalization: Mapping[str, Any] | None = None,
) -> Any:
  """Build an FCN; the output is float32 logits [N, H, W, num_classes] for any input H, W.

  ``normalization`` defaults to the fixed 8-bit mapping x / 127.5 - 1.
  """
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
  if upsampling not in UPSAMPLING:
    raise ValueError(f"unknown upsampling {upsampling!r}; choose one of {UPSAMPLING}")
  if int(num_classes) < 2:
    raise ValueError(f"num_classes must be at least 2, got {num_classes}")
  if int(channels) < 1:
    raise ValueError(f"channels must be at least 1, got {channels}")
  images = keras.Input(shape=(None, None, int(channels)), name="images")
  normalised = normalization_layer(normalization or NORMALIZATION, int(channels))(images)
  padded = PadToMultiple(NETWORK_STRIDE, name="pad_to_stride")(normalised)
  features = build_encoder(encoder, padded, weights_path=encoder_weights, width=width)

  if variant == "deconvnet":
    logits = _deconvolution_decoder(features, padded, num_classes, upsampling, width)
  else:
    logits = _fcn_decoder(features, num_classes, upsampling, FCN_STRIDES[variant])
  logits = CropToReference(name="crop_to_input")([logits, images])
  logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
  return keras.Model(images, logits, name=f"{variant}_{encoder}_{upsampling}")
