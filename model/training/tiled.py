"""Whole-or-tiled prediction of one image, exactly as the pipeline cuts it.

Validation and evaluation run at native resolution. Images up to
``whole_pixels`` go through the network whole; larger ones (a slide, a scene)
are cut with the pipeline's own tile plan (``model.tiling``: same
tiles, same owned rectangles), so the numbers describe what a run produces
and memory stays bounded however large the image.
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from model.tiling import owned_crop, plan_tiles, stitch

TILE_SIZE = 512
TILE_OVERLAP = 64
WHOLE_PIXELS = 4 * TILE_SIZE * TILE_SIZE


def predict_image(
  predict: Callable[[np.ndarray], Any],
  image: np.ndarray,
  tile_size: int = TILE_SIZE,
  overlap: int = TILE_OVERLAP,
  whole_pixels: int = WHOLE_PIXELS,
) -> np.ndarray:
  """Class ids [H, W] of one image [H, W, C]; ``predict`` maps a batch [N, h, w, C] to ids [N, h, w].

  ``predict`` may return [N, h, w, K] (per-pixel values beside the ids); the result is then [H, W, K].
  """
  height, width = image.shape[:2]
  specs = plan_tiles(height, width, tile_size, overlap, whole_pixels)
  if len(specs) == 1:
    return np.asarray(predict(image[None]))[0]
  crops: list[tuple[int, int, np.ndarray]] = []
  for spec in specs:
    window = image[spec.top : spec.top + spec.height, spec.left : spec.left + spec.width]
    crops.append((spec.own_top, spec.own_left, owned_crop(spec, np.asarray(predict(window[None]))[0])))
  first = crops[0][2]
  return stitch(height, width, crops, dtype=first.dtype, channels=first.shape[2] if first.ndim == 3 else 0)
