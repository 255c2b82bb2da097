"""The GPU engine (and the reference on CPUs): the exported SavedModel run by TensorFlow.

The per-class pixel counts and confidence sums over each tile's owned
rectangle are reduced inside the same ``tf.function`` as the model, on the
device, so the float confidence map never leaves the GPU. On a GPU,
``--mixed_precision`` selects the export's float16 signature.
"""

import os
from typing import Any, Callable, Optional, Tuple

import numpy as np

from model.engines.engine import InputShape, Stats

MIXED_SIGNATURE = "serving_mixed_float16"
DEFAULT_SIGNATURE = "serving_default"


def _configure_gpus(tf: Any) -> None:
  """Let TensorFlow grow GPU memory instead of grabbing it all up front."""
  for gpu in tf.config.list_physical_devices("GPU"):
    try:
      tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # already initialised in this process
      pass


class TensorFlowSegmenter:
  """A loaded SavedModel: ``<spec.dtype> [N,H,W,spec.channels]`` -> (uint8 ids, float32 confidence)."""

  engine = "tensorflow"

  def __init__(self, model_dir: str, mixed_precision: bool, spec: InputShape) -> None:
    import tensorflow as tf

    _configure_gpus(tf)
    self._tf = tf
    self.spec = spec
    self.precision = "mixed_float16" if mixed_precision else "fp32"
    self.module = tf.saved_model.load(os.path.join(model_dir, "saved_model"))
    signatures = self.module.signatures
    if mixed_precision:
      if MIXED_SIGNATURE not in signatures:
        raise ValueError(
          f"--mixed_precision needs the '{MIXED_SIGNATURE}' signature, which {model_dir} does not export"
        )
      signature = signatures[MIXED_SIGNATURE]
      self._call: Callable[[Any], Any] = lambda images: signature(images=images)
    elif hasattr(self.module, "segment"):
      self._call = self.module.segment
    else:
      signature = signatures[DEFAULT_SIGNATURE]
      self._call = lambda images: signature(images=images)
    self._stats_functions: dict[int, Any] = {}

  def describe(self) -> dict[str, Any]:
    gpus = self._tf.config.list_physical_devices("GPU")
    return {
      "engine": self.engine,
      "precision": self.precision,
      "runtime": f"TensorFlow {self._tf.__version__}",
      "device": "GPU" if gpus else "CPU",
    }

  def input_signature(self) -> Tuple[Optional[str], Optional[int]]:
    """(dtype name, channels) of ``serving_default``'s ``images``; (None, None) when it has none."""
    signature = self.module.signatures.get(DEFAULT_SIGNATURE)
    if signature is None:
      raise ValueError(f"the model has no '{DEFAULT_SIGNATURE}' signature; it does not follow docs/CONTRACTS.md")
    args, kwargs = signature.structured_input_signature
    tensor = kwargs.get("images") if kwargs else (args[0] if args else None)
    if tensor is None:
      raise ValueError(
        f"the model has no 'images' input in '{DEFAULT_SIGNATURE}'; it does not follow docs/CONTRACTS.md"
      )
    return tensor.dtype.name, (tensor.shape[-1] if tensor.shape.rank else None)

  def declared_classes(self) -> Optional[int]:
    """The class count the export recorded in its ``num_classes`` variable, if any."""
    declared = getattr(self.module, "num_classes", None)
    if declared is None:
      return None
    try:
      return int(declared.numpy()) if hasattr(declared, "numpy") else int(declared)
    except (TypeError, ValueError):
      return None

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.predict(images)

  def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, confidence) maps: the raw contract, for checks and tests."""
    return tuple(t.numpy() for t in _contract_outputs(self._call(self._tf.convert_to_tensor(images))))

  def segment_with_stats(self, images: np.ndarray, owned: np.ndarray, num_classes: int) -> Stats:
    """[N,H,W,C] images + owned rectangles -> (class ids, pixels per class, confidence sums, max id).

    ``owned`` is [N, 4] int32 (top, bottom, left, right) in tile coordinates.
    Counts are exact integers and confidence sums are accumulated in
    float64; the highest class id anywhere in the batch comes back too, so
    ids beyond the card are caught.
    """
    function = self._stats_functions.get(num_classes)
    if function is None:
      function = self._stats_functions[num_classes] = _stats_function(self._tf, self._call, num_classes, self.spec)
    tf = self._tf
    class_ids, pixels, confidence, top = function(tf.convert_to_tensor(images), tf.convert_to_tensor(owned, tf.int32))
    return class_ids.numpy(), pixels.numpy().astype(np.int64), confidence.numpy(), int(top.numpy())


def _contract_outputs(outputs: Any) -> tuple[Any, Any]:
  """(class_ids, confidence) from a model's dict or pair of outputs."""
  if isinstance(outputs, dict):
    return outputs["class_ids"], outputs["confidence"]
  return outputs


def _stats_function(tf: Any, call: Callable[[Any], Any], num_classes: int, spec: InputShape) -> Any:
  """The model call plus per-tile, per-class pixel counts and confidence sums, as one tf.function."""

  @tf.function(
    input_signature=[
      tf.TensorSpec([None, None, None, spec.channels], tf.as_dtype(spec.dtype)),
      tf.TensorSpec([None, 4], tf.int32),
    ]
  )
  def segment_with_stats(images: Any, owned: Any) -> tuple[Any, Any, Any, Any]:
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
