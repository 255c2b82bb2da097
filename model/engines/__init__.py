"""Inference engines for an exported model directory: TensorFlow (GPUs), OpenVINO (CPUs), onnxruntime (ONNX models).

One interface, two runtimes. Every engine turns ``<dtype> [N, H, W, C]``
images into uint8 class ids and float32 winning-class confidence
(``predict``), and into the per-tile, per-class pixel counts and confidence
sums the pipeline's statistics need (``segment_with_stats``). Which engine
and precision a run gets is decided in ``model.engines.choice`` from the
flags, the CPU's own feature flags (``model.engines.cpu``) and what the
model directory carries (``model.engines.openvino_ir``).

``load`` imports only the runtime it needs: an OpenVINO run never imports
TensorFlow when the model directory carries its IR, and a model wrapped
from ONNX never needs it at all (OpenVINO on CPUs, onnxruntime on GPUs).
"""

import types
from typing import Any

from model.engines import cpu
from model.engines.choice import (
  TTA_MODES,
  EngineChoice,
  EngineError,
  choose,
  onnxruntime_providers,
  openvino_installed,
)
from model.engines.engine import Engine, InputShape
from model.engines.openvino_ir import int8_problem, model_format

__all__ = ["TTA_MODES", "EngineChoice", "EngineError", "card_input", "choose_here", "load"]


def card_input(card: dict[str, Any]) -> types.SimpleNamespace:
  """What the card says the model takes, as the engines read it (``.channels``, ``.dtype``; 8-bit RGB by default)."""
  block = card.get("input") or {}
  return types.SimpleNamespace(channels=int(block.get("channels", 3)), dtype=str(block.get("dtype", "uint8")))


def choose_here(
  model_dir: str, engine: str = "auto", precision: str = "auto", mixed_precision: bool = False, tta: str = "none"
) -> EngineChoice:
  """``choice.choose`` for this machine (its CPU flags and GPUs) and the local model directory."""
  kind = model_format(model_dir)
  return choose(
    engine,
    precision,
    features=cpu.probe(),
    gpu=cpu.gpu_visible(),
    has_openvino=openvino_installed(),
    has_int8=int8_problem(model_dir) is None,
    mixed_precision=mixed_precision,
    model_dir=model_dir,
    model_format=kind,
    onnx_providers=onnxruntime_providers() if kind == "onnx" else (),
    tta=tta,
  )


def load(model_dir: str, choice: EngineChoice, spec: InputShape, threads: int = 0, tta: str = "none") -> Engine:
  """The segmenter for a local exported model directory, on the chosen engine and precision.

  ``tta="flips"`` (OpenVINO only, as ``choose`` guarantees) wraps it in ``flips.FlipAveragedSegmenter``.
  """
  if choice.engine == "openvino":
    from model.engines.openvino_engine import OpenVinoSegmenter

    if tta == "flips":
      from model.engines.flips import FlipAveragedSegmenter

      return FlipAveragedSegmenter(OpenVinoSegmenter(model_dir, spec, choice.precision, threads, probabilities=True))
    return OpenVinoSegmenter(model_dir, spec, choice.precision, threads)
  if tta != "none":
    raise EngineError(f"--tta {tta} runs on the OpenVINO engine, not {choice.engine}")
  if choice.engine == "onnxruntime":
    from model.engines.onnxruntime_engine import OnnxRuntimeSegmenter

    return OnnxRuntimeSegmenter(model_dir, spec, threads, gpu=cpu.gpu_visible())
  from model.engines.tensorflow_engine import TensorFlowSegmenter

  return TensorFlowSegmenter(model_dir, choice.precision == "mixed_float16", spec)
