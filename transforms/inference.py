"""Batched inference through RunInference: tiles in, uint8 class ids and per-class sums out.

``SegmentationModelHandler`` is a plain ``ModelHandler`` (not the TF handlers
shipped with Beam: those need ``tensorflow_hub`` and cannot load a
SavedModel directory under Keras 3). The model is loaded once per worker
process on the engine chosen for that machine (``transforms.model_runtime``;
``model.engines``: OpenVINO on CPUs, TensorFlow on GPUs, onnxruntime-gpu for
models wrapped from ONNX), and each batch is split by tile shape so every
engine call has one fixed shape. Results leave the engine as uint8 class ids
of the tile's owned region plus a few numbers per class: no float map
crosses a process boundary. Tiles come from ``transforms.tiles``.
"""

import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, cast

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from transforms import accounting, quiet
from transforms.imaging import progress
from transforms.imaging.display import blend_overlay, to_display
from transforms.imaging.records import STAGE_INFERENCE, Tile, TileResult
from transforms.model_runtime import SegmenterHandle, class_id_beyond
from transforms.tiles import TileImagesFn, tile_error

_LOG = logging.getLogger(__name__)
quiet.restore_beam_memory_probe()  # in every process that runs the handler, worker processes included


class SegmentationModelHandler(ModelHandler[Tile, TileResult, Any]):
  """RunInference handler for the exported deconvseg model.

  A batch that raises is retried tile by tile, so one poisonous tile fails
  only its own image; tiles that still fail come back with ``error`` set
  rather than raising, so the rest of the bundle is never lost. Each model
  call holds at most ``pixel_budget`` pixels (by default ``max_batch_size``
  full tiles), so whole small images batched together never need more
  device memory than a batch of tiles.
  """

  def __init__(
    self,
    model: SegmenterHandle,
    num_classes: int,
    max_batch_size: int,
    palette: Optional[Sequence[Sequence[int]]] = None,
    pixel_budget: Optional[int] = None,
    **handler_kwargs: Any,
  ) -> None:
    # handler_kwargs: e.g. model_copies=N to share N models across a worker's processes.
    super().__init__(**handler_kwargs)
    self._model = model
    self._num_classes = num_classes
    self._max_batch_size = max_batch_size
    self._pixel_budget = pixel_budget
    self._palette = None if palette is None else np.asarray(palette, dtype=np.uint16)

  def load_model(self) -> Any:
    return self._model.acquire()

  def batch_elements_kwargs(self) -> Dict[str, Any]:
    # A fixed batch size: BatchElements' adaptive sizing would start at 1 and
    # then jitter around the maximum, and each new batch shape costs the CPU
    # backend a fresh set of kernels; fixed batches also make the floating-point
    # sums (mean confidence) the same from run to run. Only a bundle's last
    # batch is smaller.
    return {"min_batch_size": self._max_batch_size, "max_batch_size": self._max_batch_size}

  def get_num_bytes(self, batch: Sequence[Tile]) -> int:
    # The default pickles the whole batch just to measure it.
    return sum(tile.pixels.nbytes for tile in batch)

  def get_metrics_namespace(self) -> str:
    return "deconvseg_inference"

  def run_inference(
    self, batch: Sequence[Tile], model: Any, inference_args: Optional[Dict[str, Any]] = None
  ) -> Iterable[TileResult]:
    if not batch:
      return []
    results: list[Optional[TileResult]] = [None] * len(batch)
    by_shape: defaultdict[Tuple[int, ...], list[int]] = defaultdict(list)
    for position, tile in enumerate(batch):
      if tile.error:
        results[position] = _result(tile, *_EMPTY, error=tile.error)
      else:
        by_shape[tile.pixels.shape].append(position)
    for positions in self._calls(by_shape):
      try:
        self._segment_group(batch, positions, model, results)
      except Exception as exc:
        if len(positions) == 1:
          results[positions[0]] = self._failed(batch[positions[0]], exc)
          continue
        _LOG.warning("Inference failed for a batch of %d tiles (%r); retrying them one by one", len(positions), exc)
        for position in positions:
          try:
            self._segment_group(batch, [position], model, results)
          except Exception as single_exc:
            results[position] = self._failed(batch[position], single_exc)
    return cast("list[TileResult]", results)  # every position is filled above

  def _calls(self, by_shape: Dict[Tuple[int, ...], list[int]]) -> Iterator[list[int]]:
    """Splits each same-shape group into calls within the pixel budget."""
    for shape, positions in by_shape.items():
      per_call = len(positions)
      if self._pixel_budget:
        per_call = max(1, self._pixel_budget // (shape[0] * shape[1]))
      for start in range(0, len(positions), per_call):
        yield positions[start : start + per_call]

  def _segment_group(
    self, batch: Sequence[Tile], positions: list[int], model: Any, results: list[Optional[TileResult]]
  ) -> None:
    tiles = [batch[p] for p in positions]
    images = np.stack([tile.pixels for tile in tiles])
    owned = np.array(
      [[t.own_top - t.top, t.own_bottom - t.top, t.own_left - t.left, t.own_right - t.left] for t in tiles],
      dtype=np.int32,
    )
    class_ids, class_pixels, class_confidence, top = model.segment_with_stats(images, owned, self._num_classes)
    if class_ids.shape != images.shape[:3]:
      raise ValueError(f"model returned class ids of shape {class_ids.shape} for input {images.shape}")
    beyond = class_id_beyond(top, self._num_classes)
    if beyond is not None:
      raise ValueError(f"model produced class id {beyond} but its card lists {self._num_classes} classes")
    for row, (position, tile) in enumerate(zip(positions, tiles)):
      results[position] = self._tile_result(tile, owned[row], class_ids[row], class_pixels[row], class_confidence[row])
    progress.INFERENCE.add(len(positions), int(np.prod(images.shape[:3])))

  def _tile_result(
    self, tile: Tile, owned: np.ndarray, class_ids: np.ndarray, class_pixels: np.ndarray, class_confidence: np.ndarray
  ) -> TileResult:
    top, bottom, left, right = (int(v) for v in owned)
    owned_ids = np.ascontiguousarray(class_ids[top:bottom, left:right])
    overlay = None
    if self._palette is not None:
      shown = to_display(tile.pixels[top:bottom, left:right], tile.display)
      overlay = blend_overlay(shown, owned_ids, self._palette)
    return _result(tile, owned_ids, class_pixels, class_confidence, overlay)

  @staticmethod
  def _failed(tile: Tile, exc: Exception) -> TileResult:
    Metrics.counter(accounting.NAMESPACE, "tiles_failed").inc()
    return _result(tile, *_EMPTY, error=tile_error(exc, f"inference failed for tile {tile.index}", STAGE_INFERENCE))


# The arrays of a tile result that carries an error: class ids, per-class pixels and confidence sums.
_EMPTY = (np.zeros((0, 0), dtype=np.uint8), np.zeros((0,), dtype=np.int64), np.zeros((0,), dtype=np.float64))


def _result(
  tile: Tile,
  class_ids: np.ndarray,
  class_pixels: np.ndarray,
  class_confidence: np.ndarray,
  overlay: Optional[np.ndarray] = None,
  error: Optional[Tuple[str, str, str]] = None,
) -> TileResult:
  """A tile's result: its image's header and its place in the image, then what the model made of it."""
  place = (tile.index, tile.count, tile.own_top, tile.own_left)
  return TileResult(tile.header, *place, class_ids, class_pixels, class_confidence, overlay, error)


class TileAndSegment(beam.PTransform):
  """Composite: DecodedImages -> TileResults (tiles of all images share batches)."""

  def __init__(
    self, handler: SegmentationModelHandler, tile_size: int, overlap: int, whole_pixels: Optional[int] = None
  ) -> None:
    super().__init__()
    self._handler = handler
    self._tile_size = tile_size
    self._overlap = overlap
    self._whole_pixels = whole_pixels

  def expand(self, images: Any) -> Any:
    return (
      images
      | "CutTiles" >> beam.ParDo(TileImagesFn(self._tile_size, self._overlap, self._whole_pixels))
      | "RunInference" >> RunInference(self._handler)
    )
