"""Tests of transforms/inference.py: the RunInference model handler's batching, retries and class id check."""

import numpy as np

from transforms.imaging.records import ImageHeader, Tile


class _FakeModel:
  """Segmenter stand-in: class = first channel % 3; fails on demand."""

  def __init__(self, poison_value=None):
    self.calls = []
    self.poison_value = poison_value

  def segment_with_stats(self, images, owned, num_classes):
    """Same outputs as Segmenter.segment_with_stats, reduced in numpy."""
    self.calls.append(images.shape)
    if self.poison_value is not None and (images == self.poison_value).all(axis=(1, 2, 3)).any():
      raise RuntimeError("poisoned tile")
    class_ids = (images[..., 0] % 3).astype(np.uint8)
    pixels = np.zeros((len(images), num_classes), np.int64)
    sums = np.zeros((len(images), num_classes), np.float64)
    for row, (top, bottom, left, right) in enumerate(owned):
      region = class_ids[row, top:bottom, left:right].ravel()
      pixels[row] = np.bincount(region, minlength=num_classes)[:num_classes]
      sums[row] = np.bincount(region, weights=np.full(region.shape, 0.5), minlength=num_classes)[:num_classes]
    return class_ids, pixels, sums, int(class_ids.max())


def _tile(key, pixels, index=0, count=1):
  h, w = pixels.shape[:2]
  return Tile(
    header=ImageHeader(uri=key, key=key, height=h, width=w),
    index=index,
    count=count,
    top=0,
    left=0,
    own_top=0,
    own_bottom=h,
    own_left=0,
    own_right=w,
    pixels=pixels,
  )


def test_handler_groups_by_shape_and_handles_empty_batches():
  from transforms.inference import SegmentationModelHandler
  from transforms.model_runtime import SegmenterHandle

  handler = SegmentationModelHandler(SegmenterHandle("unused"), num_classes=3, max_batch_size=8)
  assert handler.batch_elements_kwargs()["max_batch_size"] == 8
  model = _FakeModel()
  assert list(handler.run_inference([], model)) == []
  batch = [
    _tile("a", np.full((4, 5, 3), 1, np.uint8)),
    _tile("b", np.full((2, 2, 3), 2, np.uint8)),
    _tile("c", np.full((4, 5, 3), 4, np.uint8)),
  ]
  results = handler.run_inference(batch, model)
  assert sorted(model.calls) == [(1, 2, 2, 3), (2, 4, 5, 3)]
  assert [r.key for r in results] == ["a", "b", "c"]
  assert results[0].class_pixels.tolist() == [0, 20, 0]
  assert results[1].class_pixels.tolist() == [0, 0, 4]
  assert results[2].class_confidence.tolist() == [0, 10.0, 0]


def test_handler_retries_a_failed_batch_tile_by_tile():
  from transforms.inference import SegmentationModelHandler
  from transforms.model_runtime import SegmenterHandle

  handler = SegmentationModelHandler(SegmenterHandle("unused"), num_classes=3, max_batch_size=8)
  batch = [_tile(k, np.full((3, 3, 3), v, np.uint8)) for k, v in (("a", 1), ("bad", 9), ("c", 2))]
  results = handler.run_inference(batch, _FakeModel(poison_value=9))
  assert results[0].error is None and results[2].error is None
  assert results[1].error[0] == "RuntimeError" and "poisoned" in results[1].error[1]


def test_handler_rejects_class_ids_beyond_the_card():
  from transforms.inference import SegmentationModelHandler
  from transforms.model_runtime import SegmenterHandle

  handler = SegmentationModelHandler(SegmenterHandle("unused"), num_classes=2, max_batch_size=8)
  results = handler.run_inference([_tile("a", np.full((3, 3, 3), 2, np.uint8))], _FakeModel())
  assert results[0].error and "class id 2" in results[0].error[1]
