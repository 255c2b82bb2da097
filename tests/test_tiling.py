"""Tests of model/tiling.py: tile geometry and the stitching rule."""

import numpy as np
import pytest

from model.tiling import owned_crop, plan_tiles, stitch, tile_starts


@pytest.mark.parametrize(
  "length,tile,overlap,expected",
  [
    (1, 64, 8, [0]),
    (64, 64, 8, [0]),
    (65, 64, 8, [0, 1]),
    (200, 64, 16, [0, 48, 96, 136]),
    (112, 64, 16, [0, 48]),
  ],
)
def test_tile_starts(length, tile, overlap, expected):
  assert tile_starts(length, tile, overlap) == expected


def test_tile_starts_rejects_bad_overlap():
  with pytest.raises(ValueError):
    tile_starts(100, 32, 32)


@pytest.mark.parametrize("height,width", [(1, 1), (1, 500), (64, 64), (65, 200), (333, 517), (1000, 97)])
@pytest.mark.parametrize("tile,overlap", [(64, 0), (64, 16), (64, 32), (100, 7)])
def test_owned_regions_partition_the_image(height, width, tile, overlap):
  specs = plan_tiles(height, width, tile, overlap)
  coverage = np.zeros((height, width), np.int32)
  shapes = {(s.height, s.width) for s in specs}
  if height * width <= tile * tile:
    assert shapes == {(height, width)}, "small images run whole"
  else:
    assert shapes == {(min(tile, height), min(tile, width))}, "all tiles of an image share one shape"
  for s in specs:
    assert 0 <= s.top and s.top + s.height <= height and 0 <= s.left and s.left + s.width <= width
    assert s.top <= s.own_top < s.own_bottom <= s.top + s.height
    assert s.left <= s.own_left < s.own_right <= s.left + s.width
    coverage[s.own_top : s.own_bottom, s.own_left : s.own_right] += 1
    # Owned pixels keep >= overlap//2 pixels of context to every interior tile edge.
    margin = overlap // 2
    if s.top > 0:
      assert s.own_top - s.top >= margin
    if s.top + s.height < height:
      assert s.top + s.height - s.own_bottom >= margin
    if s.left > 0:
      assert s.own_left - s.left >= margin
    if s.left + s.width < width:
      assert s.left + s.width - s.own_right >= margin
  assert (coverage == 1).all()
  assert [s.index for s in specs] == list(range(len(specs)))


def test_boundaries_sit_mid_overlap_and_favour_grid_tiles():
  specs = plan_tiles(100, 200, 64, 16)  # columns start at 0, 48, 96, 136 (edge-aligned)
  cols = sorted({(s.left, s.own_left, s.own_right) for s in specs})
  assert cols == [(0, 0, 56), (48, 56, 104), (96, 104, 152), (136, 152, 200)]


def test_small_images_run_whole_even_if_one_side_is_long():
  assert [(s.height, s.width) for s in plan_tiles(1, 300, 64, 16)] == [(1, 300)]
  assert len(plan_tiles(70, 70, 64, 16)) == 4


def test_stitch_round_trip():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 5, size=(301, 457), dtype=np.uint8)
  specs = plan_tiles(301, 457, 64, 16)
  crops = []
  for s in specs:
    tile = image[s.top : s.top + s.height, s.left : s.left + s.width]
    crops.append((s.own_top, s.own_left, owned_crop(s, tile)))
  np.testing.assert_array_equal(stitch(301, 457, crops), image)


def test_stitch_detects_missing_tiles():
  specs = plan_tiles(100, 100, 64, 16)
  crops = [
    (s.own_top, s.own_left, np.zeros((s.own_bottom - s.own_top, s.own_right - s.own_left), np.uint8)) for s in specs[1:]
  ]
  with pytest.raises(ValueError, match="missing or duplicated"):
    stitch(100, 100, crops)
