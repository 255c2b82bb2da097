"""The band and depth rules: what a file's bands and sample type become in the array the model takes.

A decoder (``transforms.imaging.image_decoder``) reads an image as stored, a
``NativeImage`` whose ``kind`` says what its bands mean; ``conform`` then
keeps, merges or replicates bands and converts the sample type to the
model's input spec (docs/OWN_DATA.md), or refuses the image with a message
that says what it has and what the model takes. ``to_rgb`` is the one rule
that maps every Pillow mode to RGB uint8 for the default spec. Kept apart
from the decoders because the rules are the contract (docs/CONTRACTS.md) and
do not depend on how the pixels were read.
"""

from typing import NamedTuple, Optional, Tuple

import numpy as np
from PIL import Image

from transforms.imaging.input_spec import InputSpec

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# What the file says its bands mean; decides which conversions are allowed.
GREY, GREY_ALPHA, RGB, RGBA, BANDS = "grey", "grey + alpha", "RGB", "RGBA", "bands"


# A GeoTIFF's band colour interpretations (rasterio names) as the band kinds above.
_COLOUR_KINDS = {
  ("gray", "alpha"): GREY_ALPHA,
  ("red", "green", "blue"): RGB,
  ("red", "green", "blue", "alpha"): RGBA,
}


def kind_of_colours(colours: Tuple[str, ...]) -> str:
  """The band kind of a raster whose bands' colour interpretations (rasterio names) are ``colours``."""
  return _COLOUR_KINDS.get(tuple(colours), GREY if len(colours) == 1 else BANDS)


class DecodeError(ValueError):
  """An input that is not a usable image; the message is shown to people."""


class NativeImage(NamedTuple):
  """An image as stored: [H, W, K] at the file's own sample type, orientation applied."""

  pixels: np.ndarray
  kind: str
  pixel_size: Optional[Tuple[float, float]] = None


def _scale_sixteen_bit(values: np.ndarray) -> np.ndarray:
  """Full 0..65535 range to 0..255 with rounding (65535 -> 255)."""
  return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _grey_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
  """The single-channel rule for high-bit-depth modes.

  I;16: full 16-bit range scaled to 8 bits. I (int32): kept as is when it
  already fits 0..255, otherwise clipped to 0..65535 and scaled like 16-bit
  (the common case is 16-bit data stored as int32). F (float32): 0..1 is
  scaled by 255, 0..255 is kept, anything else is min-max stretched; NaN and
  infinities become 0.
  """
  if mode in SIXTEEN_BIT_MODES:
    return _scale_sixteen_bit(values)
  if mode == "I":
    smallest, largest = int(values.min()), int(values.max())
    if smallest >= 0 and largest <= 255:
      return values.astype(np.uint8)
    return _scale_sixteen_bit(np.clip(values, 0, 65535))
  values = np.where(np.isfinite(values), values, 0).astype(np.float32)
  low, high = float(values.min()), float(values.max())
  if low >= 0 and high <= 1:
    scaled = values * 255.0
  elif low >= 0 and high <= 255:
    scaled = values
  elif high > low:
    scaled = (values - low) * (255.0 / (high - low))
  else:
    scaled = np.zeros_like(values)
  return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> np.ndarray:
  """RGB uint8 [H, W, 3] for any supported mode.

  Alpha (RGBA, LA, PA, palette transparency) is dropped, keeping the stored
  colour: segmentation is about what was imaged, not how it is composited.
  1, L, P, CMYK and other 8-bit modes go through Pillow's own conversion.
  """
  mode = image.mode
  if mode == "RGB":
    return np.asarray(image)
  if mode in SIXTEEN_BIT_MODES or mode in ("I", "F"):
    grey = _grey_to_uint8(np.asarray(image), mode)
    return np.repeat(grey[:, :, None], 3, axis=2)
  if mode == "P" and "transparency" in image.info:
    image = image.convert("RGBA")
  return np.asarray(image.convert("RGB"))


def _luminance(rgb: np.ndarray) -> np.ndarray:
  """ITU-R 601-2 luma of [H, W, 3], as Pillow's convert("L") computes it (exact for 8 bits)."""
  if np.issubdtype(rgb.dtype, np.integer) and rgb.dtype.itemsize <= 2:
    wide = rgb.astype(np.uint64)
    luma = (wide[:, :, 0] * 19595 + wide[:, :, 1] * 38470 + wide[:, :, 2] * 7471 + 0x8000) >> 16
    return luma.astype(rgb.dtype)[:, :, None]
  weights = np.array([0.299, 0.587, 0.114])
  return (rgb.astype(np.float64) @ weights).astype(rgb.dtype)[:, :, None]


def _band_words(bands: int, kind: str) -> str:
  noun = "band" if bands == 1 else "bands"
  return f"{bands} {noun}" if kind == BANDS else f"{bands} {noun} ({kind})"


def _to_depth(pixels: np.ndarray, dtype: str) -> np.ndarray:
  """The sample type the model takes.

  To uint8: today's rules (16-bit scaled by 1/257, wider integers kept when
  they fit 0..255 else treated as 16-bit, floats 0..1 x 255 else min-max).
  To uint16: 8-bit data is scaled by 257, so 0..255 maps onto the full
  0..65535 range (255 -> 65535) as a 16-bit sensor would have recorded it;
  other integers are clipped to 0..65535; floats 0..1 are scaled by 65535,
  others clipped.
  """
  if pixels.dtype == np.bool_:
    pixels = pixels.astype(np.uint8) * 255
  if pixels.dtype == np.dtype(dtype):
    return np.ascontiguousarray(pixels)
  if dtype == "uint8":
    mode = "I;16" if pixels.dtype == np.uint16 else "I" if np.issubdtype(pixels.dtype, np.integer) else "F"
    return _grey_to_uint8(pixels, mode)
  if pixels.dtype == np.uint8:
    return pixels.astype(np.uint16) * 257
  if np.issubdtype(pixels.dtype, np.integer):
    return np.clip(pixels, 0, 65535).astype(np.uint16)
  values = np.where(np.isfinite(pixels), pixels, 0).astype(np.float64)
  if values.size and values.min() >= 0 and values.max() <= 1:
    values = values * 65535.0
  return np.clip(np.rint(values), 0, 65535).astype(np.uint16)


def conform(native: NativeImage, spec: InputSpec) -> np.ndarray:
  """The model's [H, W, spec.channels] array of spec.dtype from a native image; raises DecodeError.

  Bands: equal counts are kept as they are; a one-band model takes the luma
  of RGB/RGBA (alpha dropped) and the grey of grey + alpha; a three-band
  model takes grey replicated and RGBA without its alpha. Anything else
  would be guessing which bands the model was trained on, so the image fails.
  """
  pixels, kind = native.pixels, native.kind
  if not pixels.dtype.isnative:
    pixels = pixels.astype(pixels.dtype.newbyteorder("="))
  bands, channels = pixels.shape[2], spec.channels
  if bands != channels:
    if channels == 1 and kind in (RGB, RGBA):
      pixels = _luminance(pixels[:, :, :3])
    elif channels == 1 and kind == GREY_ALPHA:
      pixels = pixels[:, :, :1]
    elif channels == 3 and kind in (GREY, GREY_ALPHA):
      pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    elif channels == 3 and kind == RGBA:
      pixels = pixels[:, :, :3]
    else:
      raise DecodeError(
        f"image has {_band_words(bands, kind)} but the model takes {channels} "
        f"(card.json input.channels); give it {channels}-band images or use a model "
        f"trained on {bands}"
      )
  return _to_depth(pixels, spec.dtype)
