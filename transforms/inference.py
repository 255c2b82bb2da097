"""Tiling into model-sized windows and batched inference through RunInference.

``SegmentationModelHandler`` is a plain ``ModelHandler`` (not the TF handlers
shipped with Beam: those need ``tensorflow_hub`` and cannot load a
SavedModel directory under Keras 3). The SavedModel is loaded once per worker
process by RunInference's shared-model machinery, and each batch is split by
tile shape so every call into the compiled ``segment`` function has one fixed
shape. The per-class pixel counts and confidence sums are reduced inside the
same TensorFlow call (on the device), so results leave as uint8 class ids of
the tile's owned region plus a few numbers per class: no float map leaves the
model call, let alone crosses a process boundary.
"""

import logging
from collections import defaultdict
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.utils import shared

from model.tiling import plan_tiles
from transforms import progress
from transforms.display import to_display
from transforms.geo_windows import WindowedRaster
from transforms.input_spec import DEFAULT_SPEC, InputSpec
from transforms.records import STAGE_DECODE, STAGE_INFERENCE, DecodedImage, Tile, TileResult
from transforms.staging import local_copy

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
  """A loaded exported model: <spec.dtype> [N,H,W,spec.channels] -> (uint8 ids, float32 confidence).

  Remote model directories (gs://) are first copied to local disk through
  Beam's filesystems (``transforms.staging``), once per machine.
  """

  def __init__(self, model_dir: str, mixed_precision: bool = False, spec: InputSpec = DEFAULT_SPEC):
    import tensorflow as tf

    _configure_gpus(tf)
    self._tf = tf
    self.module = tf.saved_model.load(saved_model_path(local_copy(model_dir)))
    signatures = self.module.signatures
    if mixed_precision:
      if MIXED_SIGNATURE not in signatures:
        raise ValueError(
          f"--mixed_precision needs the '{MIXED_SIGNATURE}' signature, which {model_dir} does not export"
        )
      signature = signatures[MIXED_SIGNATURE]
      self._call = lambda images: signature(images=images)
    elif hasattr(self.module, "segment"):
      self._call = self.module.segment
    else:
      signature = signatures[DEFAULT_SIGNATURE]
      self._call = lambda images: signature(images=images)
    self.spec = spec
    self._stats_functions = {}

  def __call__(self, images: np.ndarray):
    return self.predict(images)

  def predict(self, images: np.ndarray):
    """(class ids, confidence) maps: the raw contract, for checks and tests.

    A plain method, so it also works through RunInference's cross-process model proxy.
    """
    return tuple(t.numpy() for t in _contract_outputs(self._call(self._tf.convert_to_tensor(images))))

  def segment_with_stats(self, images: np.ndarray, owned: np.ndarray, num_classes: int):
    """[N,H,W,C] images + owned rectangles -> (class ids, pixels per class, confidence sums, max id).

    ``owned`` is [N, 4] int32 (top, bottom, left, right) in tile coordinates.
    The per-class reductions over each tile's owned rectangle run inside the
    same TensorFlow call as the model (on the GPU when there is one), so the
    float confidence map never leaves the device and the bundle thread does
    no per-pixel work; counts are exact integers and confidence sums are
    accumulated in float64. The highest class id anywhere in the batch comes
    back too, so ids beyond the card are caught.
    """
    function = self._stats_functions.get(num_classes)
    if function is None:
      function = self._stats_functions[num_classes] = _stats_function(self._tf, self._call, num_classes, self.spec)
    tf = self._tf
    class_ids, pixels, confidence, top = function(tf.convert_to_tensor(images), tf.convert_to_tensor(owned, tf.int32))
    return class_ids.numpy(), pixels.numpy().astype(np.int64), confidence.numpy(), int(top.numpy())


def _contract_outputs(outputs):
  """(class_ids, confidence) from a model's dict or pair of outputs."""
  if isinstance(outputs, dict):
    return outputs["class_ids"], outputs["confidence"]
  return outputs


def _stats_function(tf, call, num_classes: int, spec: InputSpec = DEFAULT_SPEC):
  """The model call plus per-tile, per-class pixel counts and confidence sums, as one tf.function."""

  @tf.function(
    input_signature=[
      tf.TensorSpec([None, None, None, spec.channels], tf.as_dtype(spec.dtype)),
      tf.TensorSpec([None, 4], tf.int32),
    ]
  )
  def segment_with_stats(images, owned):
    class_ids, confidence = _contract_outputs(call(images))
    shape = tf.shape(class_ids)
    rows, cols = tf.range(shape[1])[None, :], tf.range(shape[2])[None, :]
    in_rows = (rows >= owned[:, 0:1]) & (rows < owned[:, 1:2])
    in_cols = (cols >= owned[:, 2:3]) & (cols < owned[:, 3:4])
    ids = tf.cast(class_ids, tf.int32)
    # Pixels outside the owned rectangle go to an extra bin that is dropped.
    binned = tf.reshape(tf.where(in_rows[:, :, None] & in_cols[:, None, :], ids, num_classes), [shape[0], -1])
    weights = tf.reshape(tf.cast(confidence, tf.float64), [shape[0], -1])
    bins = num_classes + 1
    pixels = tf.math.bincount(binned, minlength=bins, maxlength=bins, axis=-1)[:, :num_classes]
    sums = tf.math.bincount(binned, weights=weights, minlength=bins, maxlength=bins, axis=-1)[:, :num_classes]
    top = tf.reduce_max(ids)
    return class_ids, pixels, sums, top

  return segment_with_stats


class SegmenterHandle:
  """The run's model as the workers get it: loaded at most once per process, handed over where already loaded.

  Why: a local run checks the model at start-up (``pipeline.model_check``) and
  would otherwise load it again in its worker (0.4-3 s, most of it the first
  load's imports and graph restore). The launcher passes the model it loaded
  as ``loaded``: this handle holds it, for as long as the launcher holds the
  handle (the graph it builds), and offers it through Beam's per-process
  ``Shared`` cache under the handle's own key.

  Pickled into the graph, the handle carries only that key and what to load
  (model directory, precision, input spec). A copy unpickled in the
  launcher's process (the in-process FnApiRunner) acquires the launcher's
  model through the key; a copy in any other process (multi-process
  FnApiRunner, portable and remote workers) finds nothing under it and loads
  the model there, once for all of that process's threads. Nothing is held
  beyond the handle: once the run's graph is gone, so is the model (except
  for the one object Beam's ``Shared`` keeps alive until another is
  acquired).
  """

  def __init__(
    self,
    model_dir: str,
    mixed_precision: bool = False,
    spec: InputSpec = DEFAULT_SPEC,
    loaded: Optional[Segmenter] = None,
  ):
    self.model_dir = model_dir
    self.mixed_precision = bool(mixed_precision)
    self.spec = spec
    self._shared = shared.Shared()
    self._loaded = loaded
    if loaded is not None:
      if loaded.spec != spec:
        raise ValueError(f"the loaded model takes {loaded.spec}, not {spec}")
      self._shared.acquire(lambda: loaded)

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_loaded"] = None  # workers get the model through the shared key, or load their own
    return state

  def acquire(self) -> Segmenter:
    """The model: the launcher's when this process has it, else loaded here (once per process)."""
    return self._shared.acquire(self._load)

  def _load(self) -> Segmenter:
    _LOG.info("Loading model %s (mixed precision: %s)", self.model_dir, self.mixed_precision)
    return Segmenter(self.model_dir, self.mixed_precision, self.spec)


class TileImagesFn(beam.DoFn):
  """DecodedImage -> fixed-shape Tiles (views, no copy) with owned rectangles."""

  def __init__(self, tile_size: int, overlap: int, whole_pixels: Optional[int] = None):
    self._tile_size = tile_size
    self._overlap = overlap
    self._whole_pixels = whole_pixels
    self._tiles = Metrics.counter("deconvseg", "tiles")

  def process(self, image: DecodedImage):
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


def _tile_pixels(image: DecodedImage, spec):
  """(pixels, None): a view of a decoded image, or a window read from a GeoTIFF (``transforms.geo_windows``).

  A window that cannot be read (a truncated file, a lost connection) gives
  (empty, (type, message, "decode")): the tile still travels, so its image is
  stitched from all its tiles and fails with that reason, and the rest of the run goes on.
  """
  try:
    return image.pixels[spec.top : spec.top + spec.height, spec.left : spec.left + spec.width], None
  except Exception as exc:
    Metrics.counter("deconvseg", "tiles_unreadable").inc()
    where = f"rows {spec.top}-{spec.top + spec.height}, columns {spec.left}-{spec.left + spec.width}"
    empty = np.zeros((0, 0, image.pixels.shape[2]), image.pixels.dtype)
    return empty, tile_error(exc, f"cannot read tile {spec.index} ({where})", STAGE_DECODE)


def tile_error(exc: Exception, what: str, stage: str) -> Tuple[str, str, str]:
  """A tile's ``error``: (exception type, "<what>: <its message on one line>", the stage its image fails at)."""
  message = " ".join(str(exc).split())[:300] or type(exc).__name__
  return type(exc).__name__, f"{what}: {message}", stage


def blend_overlay(pixels: np.ndarray, class_ids: np.ndarray, palette: np.ndarray) -> np.ndarray:
  """Half-and-half mix of the image and the class colours (uint8 RGB; see ``transforms.display``)."""
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

  def __init__(
    self,
    model: SegmenterHandle,
    num_classes: int,
    max_batch_size: int,
    palette: Optional[Sequence[Sequence[int]]] = None,
    pixel_budget: Optional[int] = None,
    **handler_kwargs,
  ):
    # handler_kwargs: e.g. model_copies=N to share N models across a worker's processes.
    super().__init__(**handler_kwargs)
    self._model = model
    self._num_classes = num_classes
    self._max_batch_size = max_batch_size
    self._pixel_budget = pixel_budget
    self._palette = None if palette is None else np.asarray(palette, dtype=np.uint16)

  def load_model(self) -> Segmenter:
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
    self, batch: Sequence[Tile], model: Segmenter, inference_args: Optional[Dict[str, Any]] = None
  ) -> Iterable[TileResult]:
    if not batch:
      return []
    results = [None] * len(batch)
    by_shape = defaultdict(list)
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
    return results

  def _calls(self, by_shape):
    """Splits each same-shape group into calls within the pixel budget."""
    for shape, positions in by_shape.items():
      per_call = len(positions)
      if self._pixel_budget:
        per_call = max(1, self._pixel_budget // (shape[0] * shape[1]))
      for start in range(0, len(positions), per_call):
        yield positions[start : start + per_call]

  def _segment_group(self, batch, positions, model, results):
    tiles = [batch[p] for p in positions]
    images = np.stack([tile.pixels for tile in tiles])
    owned = np.array(
      [[t.own_top - t.top, t.own_bottom - t.top, t.own_left - t.left, t.own_right - t.left] for t in tiles],
      dtype=np.int32,
    )
    class_ids, class_pixels, class_confidence, top = model.segment_with_stats(images, owned, self._num_classes)
    if class_ids.shape != images.shape[:3]:
      raise ValueError(f"model returned class ids of shape {class_ids.shape} for input {images.shape}")
    if top >= self._num_classes:
      raise ValueError(f"model produced class id {top} but its card lists {self._num_classes} classes")
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
    Metrics.counter("deconvseg", "tiles_failed").inc()
    return _result(tile, *_EMPTY, error=tile_error(exc, f"inference failed for tile {tile.index}", STAGE_INFERENCE))


# The arrays of a tile result that carries an error: class ids, per-class pixels and confidence sums.
_EMPTY = (np.zeros((0, 0), dtype=np.uint8), np.zeros((0,), dtype=np.int64), np.zeros((0,), dtype=np.float64))


def _result(tile: Tile, class_ids, class_pixels, class_confidence, overlay=None, error=None) -> TileResult:
  """A tile's result: its image's header and its place in the image, then what the model made of it."""
  place = (tile.index, tile.count, tile.own_top, tile.own_left)
  return TileResult(tile.header, *place, class_ids, class_pixels, class_confidence, overlay, error)


class TileAndSegment(beam.PTransform):
  """Composite: DecodedImages -> TileResults (tiles of all images share batches)."""

  def __init__(
    self, handler: SegmentationModelHandler, tile_size: int, overlap: int, whole_pixels: Optional[int] = None
  ):
    super().__init__()
    self._handler = handler
    self._tile_size = tile_size
    self._overlap = overlap
    self._whole_pixels = whole_pixels

  def expand(self, images):
    return (
      images
      | "CutTiles" >> beam.ParDo(TileImagesFn(self._tile_size, self._overlap, self._whole_pixels))
      | "RunInference" >> RunInference(self._handler)
    )
