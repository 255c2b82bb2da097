"""Reassemble per-tile results into one full-size mask per image.

Single-tile images (every image up to ``--whole_image_pixels``) never touch
the shuffle: their owned crop already is the mask. Multi-tile images are
grouped by key; since each tile only carries its owned rectangle (see
``model.tiling``), stitching is a copy and the shuffle moves each
pixel's class id exactly once, zlib-compressed (class maps shrink 10-50x at
level 1 for a few ms per megapixel), which is what the local runner holds in
memory and what Dataflow's shuffle bills.
"""

import zlib
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from model.tiling import stitch
from transforms import accounting
from transforms.imaging.records import FAILED, STAGE_INFERENCE, Failure, ImageMask, TileResult

MULTI_TILE = "multi_tile"
# An array as it crosses the shuffle: (dtype string, shape, zlib bytes).
Packed = tuple[str, tuple[int, ...], bytes]


def pack(array: np.ndarray) -> Packed:
  """(dtype, shape, zlib bytes) of an array, for the shuffle."""
  return array.dtype.str, array.shape, zlib.compress(np.ascontiguousarray(array).data, 1)


def unpack(packed: Packed) -> np.ndarray:
  dtype, shape, data = packed
  return np.frombuffer(zlib.decompress(data), dtype=np.dtype(dtype)).reshape(shape)


def _failure(result: TileResult, error_type: str, message: str, stage: str) -> Failure:
  return Failure(result.uri, result.key, stage, error_type, message)


class RouteTileResultsFn(beam.DoFn):
  """Single-tile results become masks here; multi-tile ones go to the shuffle (and are measured)."""

  def __init__(self) -> None:
    self._masks = accounting.distribution(accounting.SHUFFLE_STITCH_MASKS)
    self._overlays = accounting.distribution(accounting.SHUFFLE_STITCH_OVERLAYS)

  def process(self, result: Any) -> Iterator[Any]:
    if result.count > 1:
      if not result.error:
        result = result._replace(class_ids=pack(result.class_ids))
      mask_bytes, overlay_bytes = accounting.tile_result_bytes(result)
      self._masks.update(mask_bytes)
      if result.overlay is not None:
        self._overlays.update(overlay_bytes)
      yield beam.pvalue.TaggedOutput(MULTI_TILE, (result.key, result))
    elif result.error:
      yield beam.pvalue.TaggedOutput(FAILED, _failure(result, *result.error))
    else:
      yield ImageMask(result.header, result.class_ids, result.class_pixels, result.class_confidence, result.overlay)


class AssembleMaskFn(beam.DoFn):
  """(key, tile results) -> one ImageMask, or a failure if any tile failed."""

  def __init__(self) -> None:
    self._stitched = Metrics.counter(accounting.NAMESPACE, "images_stitched")

  def process(self, keyed: Any) -> Iterator[Any]:
    _, results = keyed
    results = sorted(results, key=lambda r: r.index)
    first = results[0]
    errors = [r.error for r in results if r.error]
    if errors:
      yield beam.pvalue.TaggedOutput(
        FAILED,
        _failure(
          first, errors[0][0], f"{len(errors)} of {first.count} tiles failed; first: {errors[0][1]}", errors[0][2]
        ),
      )
      return
    if [r.index for r in results] != list(range(first.count)):
      yield beam.pvalue.TaggedOutput(
        FAILED,
        _failure(first, "IncompleteTiles", f"got tiles {[r.index for r in results]} of {first.count}", STAGE_INFERENCE),
      )
      return
    height, width = first.header.height, first.header.width
    class_ids = stitch(height, width, ((r.own_top, r.own_left, unpack(r.class_ids)) for r in results))
    overlay = None
    if first.overlay is not None:
      overlay = stitch(height, width, ((r.own_top, r.own_left, r.overlay) for r in results), channels=3)
    self._stitched.inc()
    yield ImageMask(
      header=first.header,
      class_ids=class_ids,
      class_pixels=np.sum([r.class_pixels for r in results], axis=0),
      class_confidence=np.sum([r.class_confidence for r in results], axis=0),
      overlay=overlay,
    )


class StitchTiles(beam.PTransform):
  """Composite: TileResults -> ([whole-image masks, stitched masks], inference failures).

  The two mask streams stay separate PCollections on purpose: a Flatten of
  streams produced in different stages makes Beam's local FnApiRunner
  materialise its inputs, which would hold every single-tile mask of the run
  in memory. Consumers apply their (cheap-output) step to each stream and
  flatten the small results instead.
  """

  def expand(self, results: Any) -> Any:
    routed = results | "RouteBySize" >> beam.ParDo(RouteTileResultsFn()).with_outputs(MULTI_TILE, FAILED, main="masks")
    stitched = (
      routed[MULTI_TILE]
      | "GroupTilesByImage" >> beam.GroupByKey()
      | "AssembleMasks" >> beam.ParDo(AssembleMaskFn()).with_outputs(FAILED, main="masks")
    )
    failures = (routed[FAILED], stitched[FAILED]) | "InferenceFailures" >> beam.Flatten()
    return [routed.masks, stitched.masks], failures
