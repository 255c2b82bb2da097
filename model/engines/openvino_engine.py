"""The CPU engine: an exported model run by OpenVINO, in fp32, bf16 (AMX / AVX-512 BF16) or int8.

An input shape that comes back (the tile batches that make up nearly all of
a large run) is compiled once per process into its own static graph, about
10 % faster than the dynamic-shape graph and kept while it is among the most
recently used ones; a shape seen for the first time runs on one shared
dynamic-shape graph instead, because compiling a static graph (0.13 s for
the bundled model) costs more than a one-off image gains from it. Calls are
serialised per process: the engine already spreads one call over all the
threads it was given.

The per-class pixel counts and confidence sums over each tile's owned
rectangle are two vectorised ``numpy.bincount`` calls; the float confidence
map is read once, there, and never leaves this function.

With ``probabilities=True`` (``--tta flips``) the graph also returns the
class probabilities that its ``confidence`` is the maximum of, found by
walking up from that output to its ReduceMax; ``predict_probabilities``
reads them. Any graph that follows docs/CONTRACTS.md has them, whether
exported here or wrapped from Keras or ONNX.
"""

import threading
from collections import OrderedDict
from typing import Any, Optional, Tuple

import numpy as np

from model.engines.engine import InputShape, Stats
from model.engines.openvino_ir import OUTPUT_NAMES, declared_classes, locate_ir

COMPILED_SHAPES = 16
SEEN_SHAPES = 4096
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}

# A compiled graph's infer request and its output ports: class ids, confidence, then the probabilities when the
# segmenter was loaded with them (OpenVINO objects).
Request = tuple[Any, list[Any]]


class OpenVinoSegmenter:
  """``<spec.dtype> [N, H, W, C]`` -> (uint8 class ids, float32 confidence), on the CPU through OpenVINO."""

  engine = "openvino"

  def __init__(
    self, model_dir: str, spec: InputShape, precision: str = "fp32", threads: int = 0, probabilities: bool = False
  ) -> None:
    import openvino

    self.spec = spec
    self.precision = precision
    self.threads = int(threads or 0)
    self.ir, self.ir_source = locate_ir(model_dir, int8=precision == "int8")
    self._version = openvino.get_version()
    self._core = openvino.Core()
    self._model = self._core.read_model(self.ir)
    self._class_axis: int | None = None  # the probabilities' class axis, when loaded with them
    if probabilities:
      port, self._class_axis = probability_output(self._model)
      self._model.add_outputs([port])
    self._config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if precision in PRECISION_HINTS:
      self._config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[precision]
    if self.threads:
      self._config["INFERENCE_NUM_THREADS"] = self.threads
    self._compiled: OrderedDict[tuple[int, ...], Request] = OrderedDict()
    self._seen: set[tuple[int, ...]] = set()
    self._dynamic: Request | None = None
    self._lock = threading.Lock()
    self._arithmetic: str | None = None  # what the CPU plugin actually runs, read from the first compiled graph

  def describe(self) -> dict[str, Any]:
    return {
      "engine": self.engine,
      "precision": self.precision,
      "runtime": f"OpenVINO {self._version}",
      "ir": self.ir,
      "ir_source": self.ir_source,
      "threads": self.threads or "all cores",
      "arithmetic": self._arithmetic,
    }

  def input_signature(self) -> Tuple[str, Optional[int]]:
    """(dtype name, channels or None) that the graph takes."""
    port = self._model.inputs[0]
    shape = port.get_partial_shape()
    channels = shape[shape.rank.get_length() - 1] if shape.rank.is_static else None
    return port.get_element_type().to_dtype().name, (
      channels.get_length() if channels is not None and channels.is_static else None
    )

  def declared_classes(self) -> Optional[int]:
    return declared_classes(self._model)

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.predict(images)

  def _compile(self, model: Any) -> Request:
    compiled = self._core.compile_model(model, "CPU", self._config)
    if self._arithmetic is None:
      self._arithmetic = str(compiled.get_property("INFERENCE_PRECISION_HINT").to_string())
    outputs = [compiled.output(name) for name in OUTPUT_NAMES]
    if self._class_axis is not None:
      outputs.append(compiled.outputs[-1])  # add_outputs appends the probabilities last
    return compiled.create_infer_request(), outputs

  def _request(self, shape: tuple[int, ...]) -> Request:
    """The infer request for this shape: its static graph if the shape came before, else the dynamic one."""
    entry = self._compiled.get(shape)
    if entry is not None:
      self._compiled.move_to_end(shape)
      return entry
    if shape not in self._seen and self._model.inputs[0].get_partial_shape().is_dynamic:
      if len(self._seen) >= SEEN_SHAPES:  # a run of ever-new sizes: forget, do not grow
        self._seen.clear()
      self._seen.add(shape)
      if self._dynamic is None:
        self._dynamic = self._compile(self._model)
      return self._dynamic
    model = self._model.clone()
    model.reshape({model.inputs[0]: list(shape)})
    entry = self._compiled[shape] = self._compile(model)
    if len(self._compiled) > COMPILED_SHAPES:
      self._compiled.popitem(last=False)
    return entry

  def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, confidence) for a batch; an empty batch gives empty maps."""
    images = np.ascontiguousarray(images)
    if images.shape[0] == 0:
      return np.zeros(images.shape[:3], np.uint8), np.zeros(images.shape[:3], np.float32)
    results = self._infer(images)
    return np.array(results[0], np.uint8), np.array(results[1], np.float32)

  def predict_probabilities(self, images: np.ndarray) -> np.ndarray:
    """float32 [N, H, W, classes]: the probabilities ``confidence`` is the maximum of (``probabilities=True``).

    Graphs that keep classes on axis 1 (ONNX wraps of NCHW models) are moved to the contract's layout here.
    """
    if self._class_axis is None:
      raise ValueError("this OpenVinoSegmenter was loaded without probabilities=True")
    probabilities = np.asarray(self._infer(np.ascontiguousarray(images))[2], np.float32)
    return np.ascontiguousarray(np.moveaxis(probabilities, self._class_axis, -1))

  def _infer(self, images: np.ndarray) -> list[Any]:
    """The graph's outputs for one batch, in ``Request`` order."""
    with self._lock:
      shape = tuple(int(v) for v in images.shape)
      request, outputs = self._request(shape)
      try:
        result = request.infer({0: images})
      except Exception:
        # A dynamic-shape graph can return wrong values after a failed inference (OpenVINO 2026.4, seen while
        # probing ONNX models in model.wrap): the next call compiles afresh.
        self._dynamic = None
        self._compiled.pop(shape, None)
        raise
      return [result[output] for output in outputs]

  def segment_with_stats(self, images: np.ndarray, owned: np.ndarray, num_classes: int) -> Stats:
    """Same contract as the TensorFlow engine's: (class ids, pixels per class, confidence sums, max id)."""
    class_ids, confidence = self.predict(images)
    return (class_ids,) + per_class_sums(class_ids, confidence, owned, num_classes)


# Ops between the probabilities' maximum and the confidence output that change neither values nor their order.
_PASS_THROUGH = ("Convert", "Squeeze", "Reshape", "Unsqueeze")


def probability_output(model: Any) -> tuple[Any, int]:
  """(port, class axis) of ``model``'s class probabilities: what its ``confidence`` output is the maximum of.

  That is the input of a ReduceMax (graphs exported here, Keras wraps) or of the GatherElements that picks the
  winner's probability (ONNX wraps), walking up through shape and precision changes. A graph whose confidence is
  neither cannot be averaged over flips, and says so.
  """
  source = model.output(OUTPUT_NAMES[1]).get_node().input_value(0)
  while source.get_node().get_type_name() in _PASS_THROUGH:
    source = source.get_node().input_value(0)
  node = source.get_node()
  kind = node.get_type_name()
  if kind == "ReduceMax":
    axes = np.atleast_1d(node.input_value(1).get_node().get_data())
  elif kind == "GatherElements":
    axes = np.atleast_1d(node.get_attributes()["axis"])
  else:
    axes = np.zeros(0, np.int64)  # neither: no class axis
  if len(axes) != 1:
    raise ValueError(
      f"the model's '{OUTPUT_NAMES[1]}' output comes from a {kind}, not the maximum over class probabilities "
      "(docs/CONTRACTS.md), so --tta flips cannot average them; re-export or wrap the model again"
    )
  probabilities = node.input_value(0)
  return probabilities, int(axes[0]) % probabilities.get_partial_shape().rank.get_length()


def per_class_sums(
  class_ids: np.ndarray, confidence: np.ndarray, owned: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, int]:
  """Per tile: pixels of each class and their summed confidence (float64) inside its owned rectangle, and the top id.

  Ids at or past ``num_classes`` are not counted; the top id reports them so the caller can refuse the batch.
  """
  count = len(class_ids)
  pixels = np.zeros((count, num_classes), np.int64)
  sums = np.zeros((count, num_classes), np.float64)
  top = int(class_ids.max()) if class_ids.size else 0
  for row, (top_row, bottom, left, right) in enumerate(np.asarray(owned, dtype=np.int64)):
    ids = class_ids[row, top_row:bottom, left:right].ravel()
    weights = confidence[row, top_row:bottom, left:right].ravel()
    pixels[row] = np.bincount(ids, minlength=num_classes)[:num_classes]
    sums[row] = np.bincount(ids, weights=weights, minlength=num_classes)[:num_classes]
  return pixels, sums, top
