"""FCN-32s / FCN-16s / FCN-8s (Long, Shelhamer, Darrell 2015) as functional Keras models.

Score the deepest features with a 1x1 convolution, upsample 2x and fuse with
scored skip features (16s, 8s), then upsample the rest of the way to full
resolution. The model takes float images of any height and width with the
data's own channel count and value range (8-bit RGB, 16-bit greyscale,
N-band multispectral): it normalises them itself (a fixed scale/offset, or
per-band mean and standard deviation measured on the training split), pads
to the network stride, and crops the logits back.
"""

import keras

from model.encoders import build_encoder
from model.layers import BilinearDeconv2D, CropToReference, PadToMultiple, ResizeUpsample

VARIANTS = ("fcn32s", "fcn16s", "fcn8s")
UPSAMPLING = ("bilinear", "bilinear_frozen", "random", "resize")
UPSAMPLING_DESCRIPTIONS = {
  "bilinear": "bilinear-initialised learned deconvolution",
  "bilinear_frozen": "bilinear-initialised frozen deconvolution",
  "random": "randomly initialised learned deconvolution",
  "resize": "plain bilinear resize (no deconvolution)",
}
NETWORK_STRIDE = 32
NORMALIZATION = {"scale": 1.0 / 127.5, "offset": -1.0}


def normalization_layer(normalization, channels):
  """``{"scale", "offset"}`` (the same for every band) or per-band ``{"mean", "std"}`` as one Keras layer."""
  if set(normalization) >= {"mean", "std"}:
    mean, std = list(normalization["mean"]), list(normalization["std"])
    if len(mean) != channels or len(std) != channels:
      raise ValueError(f"normalisation has {len(mean)} means and {len(std)} stds for {channels} channels")
    if min(std) <= 0:
      raise ValueError(f"normalisation std must be positive, got {std} (a constant band carries no information)")
    return keras.layers.Normalization(mean=mean, variance=[value * value for value in std], name="normalise")
  return keras.layers.Rescaling(normalization["scale"], normalization["offset"], name="normalise")


def upsampling_layer(kind, factor, name):
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


def _score(features, num_classes, name):
  # Zero-initialised skip scores make the fused net start as the coarser one (FCN training recipe).
  return keras.layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=name)(features)


def build_fcn(
  num_classes,
  variant="fcn8s",
  encoder="compact",
  upsampling="bilinear",
  encoder_weights=None,
  width=32,
  channels=3,
  normalization=None,
):
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

  score = keras.layers.Conv2D(num_classes, 1, name="score32")(features[32])
  if variant == "fcn32s":
    logits = upsampling_layer(upsampling, 32, "upsample32")(score)
  else:
    score = upsampling_layer(upsampling, 2, "upsample32_to_16")(score)
    score = keras.layers.Add(name="fuse16")([score, _score(features[16], num_classes, "score16")])
    if variant == "fcn16s":
      logits = upsampling_layer(upsampling, 16, "upsample16")(score)
    else:
      score = upsampling_layer(upsampling, 2, "upsample16_to_8")(score)
      score = keras.layers.Add(name="fuse8")([score, _score(features[8], num_classes, "score8")])
      logits = upsampling_layer(upsampling, 8, "upsample8")(score)
  logits = CropToReference(name="crop_to_input")([logits, images])
  logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
  return keras.Model(images, logits, name=f"{variant}_{encoder}_{upsampling}")
