"""Tiling into model-sized windows and batched inference through RunInference.

``SegmentationModelHandler`` is a plain ``ModelHandler`` (not the TF handlers
shipped with Beam: those need ``tensorflow_hub`` and cannot load a
SavedModel directory under Keras 3). The SavedModel is loaded once per worker
process by RunInference's shared-model machinery, and each batch is split by
tile shape so every call into the compiled ``segment`` function has one fixed
shape. Results leave as uint8 class ids of the tile's owned region plus
per-class confidence sums: no float map crosses a process boundary.
"""
import logging
from collections import defaultdict
from typing import Any, Dict, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from transforms import progress
from transforms.records import DecodedImage, Tile, TileResult
from transforms.tiling import plan_tiles

_LOG = logging.getLogger(__name__)
MIXED_SIGNATURE = "serving_mixed_float16"
DEFAULT_SIGNATURE = "serving_default"


def saved_model_path(model_dir: str) -> str:
  return model_dir.rstrip("/") + "/saved_model"


def _configure_gpus(tf):
  """Let TensorFlow grow GPU memory instead of grabbing it all up front."""
  for gpu in tf.config.list_physical_devices("GPU"):
    try:
      tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # already initialised in this process
      pass


class Segmenter:
  """A loaded exported model: uint8 [N,H,W,3] -> (uint8 ids, float32 confidence).

  Remote model directories (gs://) are first copied to local disk through
  Beam's filesystems (``pipeline.staging``), once per machine.
  """

  def __init__(self, model_dir: str, mixed_precision: bool = False):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from pipeline.staging import local_copy  # pylint: disable=import-outside-toplevel
    _configure_gpus(tf)
    self._tf = tf
    self.module = tf.saved_model.load(saved_model_path(local_copy(model_dir)))
    signatures = self.module.signatures
    if mixed_precision:
      if MIXED_SIGNATURE not in signatures:
        raise ValueError(f"--mixed_precision needs the '{MIXED_SIGNATURE}' signature, "
                         f"which {model_dir} does not export")
      signature = signatures[MIXED_SIGNATURE]
      self._call = lambda images: signature(images=images)
    elif hasattr(self.module, "segment"):
      self._call = self.module.segment
    else:
      signature = signatures[DEFAULT_SIGNATURE]
      self._call = lambda images: signature(images=images)

  def __call__(self, images: np.ndarray):
    return self.predict(images)

  def predict(self, images: np.ndarray):
    """A plain method, so it also works through RunInference's cross-process model proxy."""
    outputs = self._call(self._tf.convert_to_tensor(images))
    if isinstance(outputs, dict):
      class_ids, confidence = outputs["class_ids"], outputs["confidence"]
    else:
      class_ids, confidence = outputs
    return class_ids.numpy(), confidence.numpy()


class TileImagesFn(beam.DoFn):
  """DecodedImage -> fixed-shape Tiles (views, no copy) with owned rectangles."""

  def __init__(self, tile_size: int, overlap: int, whole_pixels: Optional[int] = None):
    self._tile_size = tile_size
    self._overlap = overlap
    self._whole_pixels = whole_pixels
    self._tiles = Metrics.counter("deconvseg", "tiles")

  def process(self, image: DecodedImage):
    height, width = image.pixels.shape[:2]
    specs = plan_tiles(height, width, self._tile_size, self._overlap, self._whole_pixels)
    self._tiles.inc(len(specs))
    for spec in specs:
      yield Tile(key=image.key, uri=image.uri, index=spec.index, count=len(specs),
                 image_height=height, image_width=width, top=spec.top, left=spec.left,
                 own_top=spec.own_top, own_bottom=spec.own_bottom,
                 own_left=spec.own_left, own_right=spec.own_right,
                 pixels=image.pixels[spec.top:spec.top + spec.height, spec.left:spec.left + spec.width],
                 pixel_size=image.pixel_size)


def blend_overlay(pixels: np.ndarray, class_ids: np.ndarray, palette: np.ndarray) -> np.ndarray:
  """Half-and-half mix of the image and the class colours (uint8 RGB)."""
  return ((pixels.astype(np.uint16) + palette[class_ids]) >> 1).astype(np.uint8)


class SegmentationModelHandler(ModelHandler[Tile, TileResult, Segmenter]):
  """RunInference handler for the exported deconvseg model.

  A batch that raises is retried tile by tile, so one poisonous tile fails
  only its own image; tiles that still fail come back with ``error`` set
  rather than raising, so the rest of the bundle is never lost. Each model
  call holds at most ``pixel_budget`` pixels (by default ``max_batch_size``
  full tiles), so whole small images batched together never need more
  device memory than a batch of tiles.
  """

  def __init__(self, model_dir: str, num_classes: int, max_batch_size: int,
               mixed_precision: bool = False, palette: Optional[Sequence[Sequence[int]]] = None,
               pixel_budget: Optional[int] = None, **handler_kwargs):
    # handler_kwargs: e.g. model_copies=N to share N models across a worker's processes.
    super().__init__(**handler_kwargs)
    self._model_dir = model_dir
    self._num_classes = num_classes
    self._max_batch_size = max_batch_size
    self._pixel_budget = pixel_budget
    self._mixed_precision = mixed_precision
    self._palette = None if palette is None else np.asarray(palette, dtype=np.uint16)

  def load_model(self) -> Segmenter:
    _LOG.info("Loading model %s (mixed precision: %s)", self._model_dir, self._mixed_precision)
    return Segmenter(self._model_dir, self._mixed_precision)

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

  def run_inference(self, batch: Sequence[Tile], model: Segmenter,
                    inference_args: Optional[Dict[str, Any]] = None) -> Iterable[TileResult]:
    if not batch:
      return []
    results = [None] * len(batch)
    by_shape = defaultdict(list)
    for position, tile in enumerate(batch):
      by_shape[tile.pixels.shape].append(position)
    for positions in self._calls(by_shape):
      try:
        self._segment_group(batch, positions, model, results)
      except Exception as exc:  # pylint: disable=broad-except
        if len(positions) == 1:
          results[positions[0]] = self._failed(batch[positions[0]], exc)
          continue
        _LOG.warning("Inference failed for a batch of %d tiles (%r); retrying them one by one",
                     len(positions), exc)
        for position in positions:
          try:
            self._segment_group(batch, [position], model, results)
          except Exception as single_exc:  # pylint: disable=broad-except
            results[position] = self._failed(batch[position], single_exc)
    return results

  def _calls(self, by_shape):
    """Splits each same-shape group into calls within the pixel budget."""
    for shape, positions in by_shape.items():
      per_call = len(positions)
      if self._pixel_budget:
        per_call = max(1, self._pixel_budget // (shape[0] * shape[1]))
      for start in range(0, len(positions), per_call):
        yield positions[start:start + per_call]

  def _segment_group(self, batch, positions, model, results):
    images = np.stack([batch[p].pixels for p in positions])
    class_ids, confidence = model.predict(images)
    if class_ids.shape != images.shape[:3] or confidence.shape != images.shape[:3]:
      raise ValueError(f"model returned shapes {class_ids.shape}/{confidence.shape} for input {images.shape}")
    for row, position in enumerate(positions):
      results[position] = self._tile_result(batch[position], class_ids[row], confidence[row])
    progress.INFERENCE.add(len(positions), int(np.prod(images.shape[:3])))

  def _tile_result(self, tile: Tile, class_ids: np.ndarray, confidence: np.ndarray) -> TileResult:
    rows = slice(tile.own_top - tile.top, tile.own_bottom - tile.top)
    cols = slice(tile.own_left - tile.left, tile.own_right - tile.left)
    owned_ids = np.ascontiguousarray(class_ids[rows, cols])
    flat = owned_ids.ravel()
    class_pixels = np.bincount(flat, minlength=self._num_classes)
    if class_pixels.shape[0] > self._num_classes:
      raise ValueError(f"model produced class id {int(flat.max())} but its card lists "
                       f"{self._num_classes} classes")
    class_confidence = np.bincount(flat, weights=confidence[rows, cols].ravel(), minlength=self._num_classes)
    overlay = None
    if self._palette is not None:
      overlay = blend_overlay(tile.pixels[rows, cols], owned_ids, self._palette)
    return TileResult(key=tile.key, uri=tile.uri, index=tile.index, count=tile.count,
                      image_height=tile.image_height, image_width=tile.image_width,
                      own_top=tile.own_top, own_left=tile.own_left, class_ids=owned_ids,
                      class_pixels=class_pixels.astype(np.int64), class_confidence=class_confidence,
                      overlay=overlay, pixel_size=tile.pixel_size)

  @staticmethod
  def _failed(tile: Tile, exc: Exception) -> TileResult:
    Metrics.counter("deconvseg", "tiles_failed").inc()
    empty = np.zeros((0,), dtype=np.int64)
    message = " ".join(str(exc).split())[:300] or type(exc).__name__
    return TileResult(key=tile.key, uri=tile.uri, index=tile.index, count=tile.count,
                      image_height=tile.image_height, image_width=tile.image_width,
                      own_top=tile.own_top, own_left=tile.own_left,
                      class_ids=np.zeros((0, 0), dtype=np.uint8), class_pixels=empty,
                      class_confidence=empty.astype(np.float64), pixel_size=tile.pixel_size,
                      error=(type(exc).__name__, f"inference failed for tile {tile.index}: {message}"))


class TileAndSegment(beam.PTransform):
  """Composite: DecodedImages -> TileResults (tiles of all images share batches)."""

  def __init__(self, handler: SegmentationModelHandler, tile_size: int, overlap: int,
               whole_pixels: Optional[int] = None):
    super().__init__()
    self._handler = handler
    self._tile_size = tile_size
    self._overlap = overlap
    self._whole_pixels = whole_pixels

  def expand(self, images):
    return (images
            | "CutTiles" >> beam.ParDo(TileImagesFn(self._tile_size, self._overlap, self._whole_pixels))
            | "RunInference" >> RunInference(self._handler))

