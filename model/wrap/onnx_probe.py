"""The user's ONNX model run on OpenVINO for model.wrap --onnx, and the served graph's steps twinned in numpy.

``Probe`` runs the user's graph with a dynamic batch; ``reference`` recomputes
around it, step by step in numpy, what the served graph does (normalise, pad,
layout, scores to logits, bilinear resize, crop, softmax); ``verify`` checks
the written OpenVINO IR against that on a probe batch off the size grid.
"""

import os
from typing import Any

import numpy as np
import onnx

from model.engines import openvino_ir
from model.text import one_line
from model.wrap.common import WrapError, output_stride, probe_images, search_multiple

# The probes compare with onnxruntime in fp32: OpenVINO would otherwise run bf16 on CPUs that have it (AVX-512 BF16,
# AMX), which moves confidences by about 1e-3.
EXACT = {"INFERENCE_PRECISION_HINT": "f32"}


def short_error(exc: BaseException, limit: int = 240) -> str:
  """The exception's type and its message on one line, cut at ``limit`` characters."""
  return f"{type(exc).__name__}: {one_line(exc, limit)}"


class Probe:
  """The user's model on OpenVINO with a dynamic batch: NCHW/NHWC float input -> its output array."""

  def __init__(self, model: Any, input_value: Any, workdir: str) -> None:
    import openvino

    relaxed = onnx.ModelProto()
    relaxed.CopyFrom(model)
    value = next(v for v in relaxed.graph.input if v.name == input_value.name)
    value.type.tensor_type.shape.dim[0].dim_param = "batch"  # torch.onnx.export fixes it at 1 by default
    path = os.path.join(workdir, "probe.onnx")
    onnx.save(relaxed, path)
    self._core = openvino.Core()
    try:
      self._model = openvino_ir.convert_model(openvino, path)
      self._compiled = self._core.compile_model(self._model, "CPU", EXACT)
    except Exception as exc:
      message = one_line(exc)
      unsupported = message.find("No conversion rule")
      if unsupported >= 0:
        message = message[unsupported:]
      raise WrapError(f"OpenVINO cannot run this model ({type(exc).__name__}: {message[:300]})") from None

  def __call__(self, inputs: np.ndarray) -> np.ndarray:
    if self._compiled is None:
      self._compiled = self._core.compile_model(self._model, "CPU", EXACT)
    try:
      return np.asarray(self._compiled(inputs.astype(np.float32))[0])
    except Exception:
      # OpenVINO 2026.4's dynamic-shape CPU graph can return wrong values after an inference that failed on
      # a size the model cannot take (seen on a 4-level U-Net, in about one process in three): start afresh.
      self._compiled = None
      raise


def normalise(images: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
  x = images.astype(np.float32)
  if "mean" in normalization:
    return (x - np.float32(normalization["mean"])) / np.float32(normalization["std"])
  return x * np.float32(normalization["scale"]) + np.float32(normalization["offset"])


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
  return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "NCHW" else x


def scores_nhwc(outputs: np.ndarray, layout: str) -> np.ndarray:
  return outputs.transpose(0, 2, 3, 1) if layout == "NCHW" else outputs


def run_probe(probe: Probe, inputs_nhwc: np.ndarray, layout: str) -> tuple[np.ndarray, int]:
  """(scores NHWC, stride) for one probe; WrapError when the output is not the input divided by one stride."""
  outputs = probe(to_layout(inputs_nhwc, layout))
  if outputs.ndim != 4 or outputs.shape[0] != inputs_nhwc.shape[0]:
    raise WrapError(f"the model returns shape {list(outputs.shape)}; expected [N, classes, H/s, W/s] ({layout})")
  scores = scores_nhwc(outputs, layout)
  return scores, output_stride(inputs_nhwc, scores)


def find_geometry(
  probe: Probe,
  layout: str,
  fixed_size: tuple[int, int] | None,
  channels: int,
  dtype: np.dtype,
  normalization: dict[str, Any],
  size_multiple: int | None = None,
) -> tuple[int, int]:
  """(size multiple, output stride), from probe batches of two images (so a batch-1-only model is found too)."""
  if fixed_size is not None:
    inputs = normalise(probe_images(2, *fixed_size, channels, dtype), normalization)
    try:
      return 1, run_probe(probe, inputs, layout)[1]
    except WrapError:
      raise
    except Exception as exc:
      raise WrapError(
        f"the model fails on a batch of 2 at its own input size {fixed_size} ({short_error(exc, 160)}); "
        "export it with a dynamic batch axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))"
      ) from None

  def stride_at(height: int, width: int, seed: int) -> int:
    return run_probe(probe, normalise(probe_images(2, height, width, channels, dtype, seed), normalization), layout)[1]

  return search_multiple(stride_at, size_multiple, reason_limit=160)


def to_logits(scores: np.ndarray, kind: str) -> np.ndarray:
  """numpy twin of the served graph's step (float64)."""
  scores = scores.astype(np.float64)
  if kind == "logits":
    return scores
  if kind == "softmax":
    return np.log(np.maximum(scores, 1e-12))
  positive = scores
  if kind == "sigmoid":
    positive = np.log(np.maximum(scores, 1e-12)) - np.log(np.maximum(1 - scores, 1e-12))
  return np.concatenate([np.zeros_like(positive), positive], axis=-1)


def bilinear(array: np.ndarray, factor: int) -> np.ndarray:
  """Half-pixel-centre bilinear upsampling by an integer factor along axes 1 and 2 of NHWC (tf.image.resize's)."""
  for axis in (1, 2):
    size = array.shape[axis]
    position = np.clip((np.arange(size * factor) + 0.5) / factor - 0.5, 0, size - 1)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, size - 1)
    weight = (position - lower).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
    array = np.take(array, lower, axis=axis) * (1 - weight) + np.take(array, upper, axis=axis) * weight
  return array


def pad_image(images: np.ndarray, target_height: int, target_width: int, padding: str) -> np.ndarray:
  height, width = images.shape[1:3]
  pads = [(0, 0), (0, target_height - height), (0, target_width - width), (0, 0)]
  if padding == "zero":
    return np.pad(images, pads)
  rows = _mirror(height, target_height)
  return images[:, rows][:, :, _mirror(width, target_width)]


def _mirror(length: int, target: int) -> np.ndarray:
  folded = np.arange(target) % (2 * length)
  return np.where(folded < length, folded, 2 * length - 1 - folded)


def reference(probe: Probe, images: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
  """Class probabilities (NHWC): the served graph's steps in numpy around the user's model (OpenVINO)."""
  height, width = images.shape[1:3]
  multiple, fixed_size = settings["multiple"], settings["fixed_size"]
  target_height, target_width = fixed_size or (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
  x = pad_image(normalise(images, settings["normalization"]), target_height, target_width, settings["padding"])
  scores, _ = run_probe(probe, x, settings["layout"])
  logits = bilinear(to_logits(scores, settings["kind"]), settings["stride"])[:, :height, :width]
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  return probabilities


def verify(
  ir_file: str, probe: Probe, settings: dict[str, Any], channels: int, dtype: np.dtype, num_classes: int
) -> None:
  """Runs the written IR as the pipeline does and compares it with ``reference`` on a probe batch off the grid."""
  import openvino

  fixed_size, multiple = settings["fixed_size"], settings["multiple"]
  if fixed_size is not None:
    height, width = max(1, fixed_size[0] - 3), max(1, fixed_size[1] - 5)
  else:
    height, width = 3 * multiple + 5, 2 * multiple + 3  # off the multiple, so padding and cropping run
  images = probe_images(2, height, width, channels, dtype, seed=2)
  written = openvino.Core().read_model(ir_file)
  declared = openvino_ir.declared_classes(written)
  if declared != num_classes:
    raise WrapError(f"the written model reports {declared} classes, expected {num_classes}")
  result = openvino.Core().compile_model(written, "CPU", EXACT)(images)
  class_ids, confidence = (np.asarray(result[name]) for name in openvino_ir.OUTPUT_NAMES)
  probabilities = reference(probe, images, settings)
  if class_ids.shape != images.shape[:3] or confidence.shape != images.shape[:3]:
    raise WrapError(f"the written model returns shape {class_ids.shape} for input {images.shape}")
  ordered = np.sort(probabilities, axis=-1)
  decided = (ordered[..., -1] - ordered[..., -2]) > 1e-4  # near-ties may round either way
  if np.any(class_ids[decided] != probabilities.argmax(-1)[decided]):
    raise WrapError("the written model disagrees with the ONNX model on a probe batch")
  if not np.allclose(confidence, probabilities.max(-1), atol=1e-4):
    raise WrapError("the written model's confidence disagrees with the ONNX model on a probe batch")
