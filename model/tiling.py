"""Tile geometry and the stitching rule (pure numpy, no Beam, no TensorFlow).

Which images are tiled. An image with at most ``whole_pixels`` pixels
(default ``T*T``, ``T`` the tile size; the pipeline uses ``4*T*T``) runs
whole at its native shape: exactly whole-image inference, and no pixel is
computed twice. Larger images are tiled.

Tiling. Along each axis of length ``L`` with overlap ``O`` (``0 <= O < T``),
tiles start at ``0, S, 2S, ...`` with ``S = T - O`` while they fit strictly
inside the image, and one last tile starts at ``L - T`` so it ends exactly on
the image edge; an axis with ``L <= T`` has one tile spanning it. All tiles
of an image share the shape ``min(T, H) x min(T, W)``, so batches have fixed
shapes. With ``S`` a multiple of the network stride every tile but the
edge-aligned last one sits on the same stride grid as whole-image inference.

Stitching rule (crop, no blending). Each output pixel is taken from exactly
one tile: tile ``i`` owns its axis interval up to ``O // 2`` pixels before
its far edge, where tile ``i+1`` takes over, i.e. the boundary is
``b = p[i] + T - O // 2``. Between regular tiles (overlap exactly ``O``)
that is the middle of the overlap; next to the edge-aligned last tile, whose
overlap is larger and whose position is off the stride grid, the on-grid
tile keeps as much as it can and the last tile owns only the strip near the
image edge. Ownership regions are disjoint rectangles covering the image, and
every owned pixel has at least ``O // 2`` pixels of context towards every
tile edge that is not an image edge: a model whose receptive field reaches
no further than ``O // 2`` pixels reproduces whole-image inference exactly,
a wider one differs only through the context it misses beyond that margin
(and, in the last tile's strip, through its different stride phase).
"""

from typing import Iterable, List, NamedTuple, Optional, Tuple

import numpy as np
import numpy.typing as npt


class TileSpec(NamedTuple):
  """Where a tile sits in the image and which rectangle of it is owned."""

  index: int  # type: ignore[assignment]  # shadows tuple.index; the field name is what every caller reads
  top: int
  left: int
  height: int
  width: int
  own_top: int
  own_bottom: int
  own_left: int
  own_right: int


def tile_starts(length: int, tile_size: int, overlap: int) -> List[int]:
  """Start offsets along one axis; the last tile is aligned to the edge."""
  if length <= 0:
    raise ValueError(f"axis length must be positive, got {length}")
  if not 0 <= overlap < tile_size:
    raise ValueError(f"need 0 <= overlap < tile_size, got overlap={overlap}, tile_size={tile_size}")
  if length <= tile_size:
    return [0]
  starts = list(range(0, length - tile_size, tile_size - overlap))
  starts.append(length - tile_size)
  return starts


def owned_intervals(length: int, tile_size: int, overlap: int, starts: List[int]) -> List[Tuple[int, int]]:
  """Half-open owned interval per tile: each hands over ``overlap // 2`` before its far edge."""
  bounds = [0]
  for start in starts[:-1]:
    bounds.append(start + tile_size - overlap // 2)
  bounds.append(length)
  return list(zip(bounds[:-1], bounds[1:]))


def plan_tiles(
  height: int, width: int, tile_size: int, overlap: int, whole_pixels: Optional[int] = None
) -> List[TileSpec]:
  """All tiles of an image, row-major, with their owned rectangles."""
  if height * width <= (tile_size * tile_size if whole_pixels is None else whole_pixels):
    return [
      TileSpec(
        index=0, top=0, left=0, height=height, width=width, own_top=0, own_bottom=height, own_left=0, own_right=width
      )
    ]
  rows = tile_starts(height, tile_size, overlap)
  cols = tile_starts(width, tile_size, overlap)
  row_own = owned_intervals(height, tile_size, overlap, rows)
  col_own = owned_intervals(width, tile_size, overlap, cols)
  tile_h, tile_w = min(tile_size, height), min(tile_size, width)
  specs = []
  for r, (top, (own_top, own_bottom)) in enumerate(zip(rows, row_own)):
    for c, (left, (own_left, own_right)) in enumerate(zip(cols, col_own)):
      specs.append(
        TileSpec(
          index=r * len(cols) + c,
          top=top,
          left=left,
          height=tile_h,
          width=tile_w,
          own_top=own_top,
          own_bottom=own_bottom,
          own_left=own_left,
          own_right=own_right,
        )
      )
  return specs


def owned_crop(spec: TileSpec, tile_output: np.ndarray) -> np.ndarray:
  """The part of a per-tile output (leading axes H, W) that the tile owns."""
  return tile_output[
    spec.own_top - spec.top : spec.own_bottom - spec.top, spec.own_left - spec.left : spec.own_right - spec.left
  ]


def stitch(
  height: int,
  width: int,
  crops: Iterable[Tuple[int, int, np.ndarray]],
  dtype: npt.DTypeLike = np.uint8,
  channels: int = 0,
) -> np.ndarray:
  """Places owned crops ``(top, left, array)`` into one full-size array.

  Raises if the crops do not cover every pixel exactly once, so a lost or
  duplicated tile can never produce a silently wrong mask.
  """
  shape = (height, width, channels) if channels else (height, width)
  out = np.empty(shape, dtype=dtype)
  covered = 0
  for top, left, crop in crops:
    h, w = crop.shape[:2]
    if top < 0 or left < 0 or top + h > height or left + w > width:
      raise ValueError(f"crop at ({top},{left}) of {h}x{w} falls outside {height}x{width}")
    out[top : top + h, left : left + w] = crop
    covered += h * w
  if covered != height * width:
    raise ValueError(f"tiles cover {covered} pixels of {height * width}: a tile is missing or duplicated")
  return out
