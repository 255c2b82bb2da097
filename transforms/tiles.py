"""Cutting decoded images into the model's fixed-shape tiles, each with the rectangle it owns in its image.

A windowed GeoTIFF (``transforms.geo_windows``) is read here, window by
window, as it is sliced; a window that cannot be read travels as a tile
with ``error`` set, so its image fails with that reason and the rest goes on.
"""

from collections.abc import Iterator
from typing import Any, Optional, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from model.text import one_line
from model.tiling import TileSpec, plan_tiles
from transforms import accounting
from transforms.geo_windows import WindowedRaster
from transforms.imaging.records import STAGE_DECODE, DecodedImage, Tile


class TileImagesFn(beam.DoFn):
  """DecodedImage -> fixed-shape Tiles (views, no copy) with owned rectangles."""

  def __init__(self, tile_size: int, overlap: int, whole_pixels: Optional[int] = None) -> None:
    self._tile_size = tile_size
    self._overlap = overlap
    self._whole_pixels = whole_pixels
    self._tiles = Metrics.counter(accounting.NAMESPACE, "tiles")

  def process(self, image: Any) -> Iterator[Any]:
    specs = plan_tiles(image.header.height, image.header.width, self._tile_size, self._overlap, self._whole_pixels)
    self._tiles.inc(len(specs))
    for spec in specs:
      pixels, error = _tile_pixels(image, spec)
      yield Tile(
        header=image.header,
        index=spec.index,
        count=len(specs),
        top=spec.top,
        left=spec.left,
        own_top=spec.own_top,
        own_bottom=spec.own_bottom,
        own_left=spec.own_left,
        own_right=spec.own_right,
        pixels=pixels,
        error=error,
      )
    if isinstance(image.pixels, WindowedRaster):
      image.pixels.close()  # every window is read: close the file on the thread that opened it


def _tile_pixels(image: DecodedImage, spec: TileSpec) -> Tuple[np.ndarray, Optional[Tuple[str, str, str]]]:
  """(pixels, None): a view of a decoded image, or a window read from a GeoTIFF (``transforms.geo_windows``).

  A window that cannot be read (a truncated file, a lost connection) gives
  (empty, (type, message, "decode")): the tile still travels, so its image is
  stitched from all its tiles and fails with that reason, and the rest of the run goes on.
  """
  try:
    return image.pixels[spec.top : spec.top + spec.height, spec.left : spec.left + spec.width], None
  except Exception as exc:
    Metrics.counter(accounting.NAMESPACE, "tiles_unreadable").inc()
    where = f"rows {spec.top}-{spec.top + spec.height}, columns {spec.left}-{spec.left + spec.width}"
    empty = np.zeros((0, 0, image.pixels.shape[2]), image.pixels.dtype)
    return empty, tile_error(exc, f"cannot read tile {spec.index} ({where})", STAGE_DECODE)


def tile_error(exc: Exception, what: str, stage: str) -> Tuple[str, str, str]:
  """A tile's ``error``: (exception type, "<what>: <its message on one line>", the stage its image fails at)."""
  message = one_line(exc, 300) or type(exc).__name__
  return type(exc).__name__, f"{what}: {message}", stage
