"""The GPU engine for models wrapped from ONNX: their served graph run by onnxruntime (CUDA, else its CPU provider).

``model.wrap --onnx`` writes the served graph (``onnx/model.onnx``: pixels in,
class ids and confidence out) as plain ONNX, so onnxruntime runs the same
file OpenVINO's IR is converted from. onnxruntime-gpu (the ``onnx-gpu``
extra) brings the CUDA provider; the CPU package runs it too, which is how
it is tested on machines without a GPU.
"""

import os
import threading
from typing import Any, Optional, Tuple

import numpy as np

from model.engines.engine import InputShape, Stats
from model.engines.openvino_engine import per_class_sums
from model.engines.openvino_ir import ONNX_FILE, ONNX_NUM_CLASSES_PROP, OUTPUT_NAMES

ONNX_TYPES = {"tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(float)": "float32"}


class OnnxRuntimeSegmenter:
  """``<spec.dtype> [N, H, W, C]`` -> (uint8 class ids, float32 confidence), through onnxruntime."""

  engine = "onnxruntime"

  def __init__(self, model_dir: str, spec: InputShape, threads: int = 0, gpu: bool = False) -> None:
    import onnxruntime

    self.spec = spec
    self.precision = "fp32"
    self.threads = int(threads or 0)
    self.path = os.path.join(model_dir, ONNX_FILE)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's concern
    if self.threads:
      options.intra_op_num_threads = self.threads
    providers = ["CPUExecutionProvider"]
    if gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
      providers.insert(0, "CUDAExecutionProvider")
    self._session = onnxruntime.InferenceSession(self.path, options, providers=providers)
    self._version = onnxruntime.__version__
    self._lock = threading.Lock()

  def describe(self) -> dict[str, Any]:
    return {
      "engine": self.engine,
      "precision": self.precision,
      "runtime": f"onnxruntime {self._version}",
      "providers": self._session.get_providers(),
      "onnx": self.path,
      "threads": self.threads or "all cores",
    }

  def input_signature(self) -> Tuple[str, Optional[int]]:
    """(dtype name, channels or None) that the graph takes."""
    port = self._session.get_inputs()[0]
    channels = port.shape[-1] if port.shape else None
    return ONNX_TYPES.get(port.type, port.type), (channels if isinstance(channels, int) else None)

  def declared_classes(self) -> Optional[int]:
    value = self._session.get_modelmeta().custom_metadata_map.get(ONNX_NUM_CLASSES_PROP)
    return int(value) if value is not None else None

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.predict(images)

  def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, confidence) for a batch; an empty batch gives empty maps."""
    images = np.ascontiguousarray(images)
    if images.shape[0] == 0:
      return np.zeros(images.shape[:3], np.uint8), np.zeros(images.shape[:3], np.float32)
    with self._lock:
      class_ids, confidence = self._session.run(list(OUTPUT_NAMES), {"images": images})
    return np.asarray(class_ids, np.uint8), np.asarray(confidence, np.float32)

  def segment_with_stats(self, images: np.ndarray, owned: np.ndarray, num_classes: int) -> Stats:
    """Same contract as the other engines': (class ids, pixels per class, confidence sums, max id)."""
    class_ids, confidence = self.predict(images)
    return (class_ids,) + per_class_sums(class_ids, confidence, owned, num_classes)
