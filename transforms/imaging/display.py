"""The one rule that turns what the model saw into an 8-bit RGB picture for people.

Overlays (``--overlays``) and the report's thumbnails both use it, so they
show an image the same way:

* bands: one or two bands show band 0 as grey; three or more show the first
  three as red, green and blue;
* depth: uint8 data is shown as is; anything wider (uint16) is stretched per
  shown band from its 2nd to its 98th percentile to 0..255. The percentiles
  are computed once per image (``display_stretch``, at decode time, on a
  strided subsample of at most about 65,536 pixels), and every tile of the
  image is drawn with the same numbers, so a tiled image shows no seams.

The default RGB uint8 input needs none of this: ``to_display`` hands its
pixels back untouched.
"""

import math
from typing import Optional

import numpy as np

STRETCH_PERCENTILES = (2.0, 98.0)
STRETCH_SAMPLES = 65536


def shown_bands(channels: int) -> list[int]:
  """Indices of the bands shown as R, G, B."""
  return [0, 0, 0] if channels < 3 else [0, 1, 2]


def display_stretch(pixels: np.ndarray) -> Optional[np.ndarray]:
  """float32 [3, 2] (low, high) per shown band for wider-than-8-bit pixels [H, W, C]; None for uint8."""
  if pixels.dtype == np.uint8:
    return None
  height, width = pixels.shape[:2]
  step = max(1, math.ceil(math.sqrt(height * width / STRETCH_SAMPLES)))
  sample = pixels[::step, ::step][:, :, shown_bands(pixels.shape[2])].reshape(-1, 3)
  low, high = np.percentile(sample, STRETCH_PERCENTILES, axis=0)
  high = np.maximum(high, low + 1)  # a flat band shows as black rather than dividing by zero
  return np.stack([low, high], axis=1).astype(np.float32)


def to_display(pixels: np.ndarray, stretch: Optional[np.ndarray] = None) -> np.ndarray:
  """uint8 RGB [H, W, 3] of pixels [H, W, C] under the image's stretch (from ``display_stretch``)."""
  if stretch is None and pixels.dtype == np.uint8 and pixels.shape[2] == 3:
    return pixels
  if stretch is None:
    stretch = display_stretch(pixels)
  shown = pixels[:, :, shown_bands(pixels.shape[2])]
  if stretch is None:
    return np.ascontiguousarray(shown)
  low, high = stretch[:, 0], stretch[:, 1]
  scaled = (shown.astype(np.float32) - low) * (255.0 / (high - low))
  return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def blend_overlay(pixels: np.ndarray, class_ids: np.ndarray, palette: np.ndarray) -> np.ndarray:
  """Half-and-half mix of the image and the class colours (uint8 RGB, as ``to_display`` shows the image)."""
  return ((pixels.astype(np.uint16) + palette[class_ids]) >> 1).astype(np.uint8)
