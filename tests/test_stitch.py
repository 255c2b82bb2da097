"""Tests of transforms/stitch.py: packing tile masks for the shuffle, and assembling tile results into one mask."""

import numpy as np


def test_pack_round_trip_and_compression():
  from transforms.stitch import pack, unpack

  crop = np.zeros((480, 480), np.uint8)
  crop[100:300, 50:400] = 3
  packed = pack(crop[10:400, 5:470])
  np.testing.assert_array_equal(unpack(packed), crop[10:400, 5:470])
  assert len(packed[2]) < crop.nbytes / 50


def _result(index, own_top, class_ids, error=None):
  """One of two 2x3 tiles of a 4x3 image, packed as RouteTileResultsFn sends it through the shuffle."""
  from transforms.imaging.records import ImageHeader, TileResult
  from transforms.stitch import pack

  return TileResult(
    header=ImageHeader(uri="mem://k", key="k", height=4, width=3),
    index=index,
    count=2,
    own_top=own_top,
    own_left=0,
    class_ids=pack(class_ids),
    class_pixels=np.bincount(class_ids.ravel(), minlength=2).astype(np.int64),
    class_confidence=np.full(2, 0.5),
    error=error,
  )


def test_assemble_mask_stitches_tiles_in_index_order_and_sums_their_statistics():
  from transforms.stitch import AssembleMaskFn

  top, bottom = np.zeros((2, 3), np.uint8), np.ones((2, 3), np.uint8)
  (mask,) = AssembleMaskFn().process(("k", [_result(1, 2, bottom), _result(0, 0, top)]))
  assert mask.key == "k" and mask.overlay is None
  assert mask.class_ids.tolist() == [[0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]]
  assert mask.class_pixels.tolist() == [6, 6] and mask.class_confidence.tolist() == [1.0, 1.0]


def test_assemble_mask_fails_an_image_with_a_failed_or_missing_tile():
  from transforms.imaging.records import FAILED
  from transforms.stitch import AssembleMaskFn

  top, bottom = np.zeros((2, 3), np.uint8), np.ones((2, 3), np.uint8)
  broken = _result(1, 2, bottom, error=("RuntimeError", "boom", "inference"))
  (failed,) = AssembleMaskFn().process(("k", [_result(0, 0, top), broken]))
  assert failed.tag == FAILED
  assert failed.value == ("mem://k", "k", "inference", "RuntimeError", "1 of 2 tiles failed; first: boom")
  (missing,) = AssembleMaskFn().process(("k", [_result(0, 0, top)]))
  assert missing.tag == FAILED and missing.value.error_type == "IncompleteTiles"
  assert missing.value.message == "got tiles [0] of 2"
