"""Which engine and precision a run uses: the flags, resolved against the machine and the model.

    --engine auto|tensorflow|openvino|onnxruntime      --precision auto|fp32|bf16|int8

``auto`` picks TensorFlow where a GPU is visible (its CUDA kernels and
mixed precision are the fast path there) and OpenVINO on CPUs when it is
installed; ``--precision auto`` is bf16 where the CPU has bf16 instructions
and fp32 elsewhere. int8 is never chosen silently: it needs an int8 model
that passed its accuracy gate (``python -m model.quantize``). A request the
machine or the model cannot honour raises ``EngineError`` with one line that
says what to do, before any work.

A model wrapped from ONNX (``model.wrap --onnx``) has no SavedModel, so
TensorFlow cannot run it: on a CPU it runs on OpenVINO (onnxruntime if
OpenVINO is missing), and where a GPU is visible on onnxruntime-gpu, the
``onnx-gpu`` extra; without it such a run is refused, naming the extra.

``--tta flips`` needs the class probabilities inside the served graph, which
only the OpenVINO engine exposes (``model.engines.flips``): with it ``auto``
means OpenVINO on every machine, and an explicit other engine is refused.
"""

import importlib.util
from dataclasses import dataclass

from model.engines.cpu import CpuFeatures

ENGINES = ("auto", "tensorflow", "openvino", "onnxruntime")
ONNX_GPU_INSTALL = "pip install -c requirements.lock 'deconvseg[onnx-gpu]' (onnxruntime-gpu, in place of onnxruntime)"
PRECISIONS = ("auto", "fp32", "bf16", "int8")
# Test-time augmentation: none, or the class probabilities averaged over the four flips (model.engines.flips).
TTA_MODES = ("none", "flips")


class EngineError(ValueError):
  """The requested engine or precision cannot run here; the message says what to do instead."""


@dataclass(frozen=True)
class EngineChoice:
  """A resolved engine ('tensorflow' or 'openvino') and precision ('fp32', 'bf16', 'int8', 'mixed_float16')."""

  engine: str
  precision: str
  reason: str = ""

  def describe(self) -> str:
    return f"{self.engine} {self.precision}"


def openvino_installed() -> bool:
  return importlib.util.find_spec("openvino") is not None


def onnxruntime_providers() -> tuple[str, ...]:
  """onnxruntime's execution providers here, () when it is not installed (imported only for ONNX models)."""
  if importlib.util.find_spec("onnxruntime") is None:
    return ()
  import onnxruntime

  return tuple(onnxruntime.get_available_providers())


def choose(
  engine: str,
  precision: str,
  *,
  features: CpuFeatures,
  gpu: bool,
  has_openvino: bool,
  has_int8: bool,
  mixed_precision: bool = False,
  model_dir: str = "the model",
  model_format: str = "saved_model",
  onnx_providers: tuple[str, ...] = (),
  tta: str = "none",
) -> EngineChoice:
  """Resolves ``--engine``/``--precision`` (and ``--mixed_precision``, ``--tta``) for this machine and model.

  ``model_format`` is ``openvino_ir.model_format`` of the directory; ``onnx_providers`` are onnxruntime's
  execution providers here (read only for ONNX models).
  """
  if engine not in ENGINES:
    raise EngineError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
  if precision not in PRECISIONS:
    raise EngineError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
  if tta not in TTA_MODES:
    raise EngineError(f"--tta {tta!r} is not one of {', '.join(TTA_MODES)}")
  ask = _Ask(engine, precision, features, gpu, has_openvino, has_int8, mixed_precision, model_dir, onnx_providers)
  if tta == "flips":
    return _choose_for_flips(ask)
  if model_format == "onnx":
    return _choose_for_onnx(ask)
  return _choose_for_saved_model(ask)


@dataclass(frozen=True)
class _Ask:
  """What ``choose`` was asked for (the flags) and what this machine and model offer, as its rules read them."""

  engine: str
  precision: str
  features: CpuFeatures
  gpu: bool
  has_openvino: bool
  has_int8: bool
  mixed_precision: bool
  model_dir: str
  providers: tuple[str, ...]  # onnxruntime's execution providers (read only for ONNX models)


def _choose_for_saved_model(ask: _Ask) -> EngineChoice:
  """The rules for an exported (or Keras-wrapped) SavedModel: TensorFlow on GPUs, OpenVINO on CPUs."""
  engine = ask.engine
  if engine == "onnxruntime":
    raise EngineError(
      f"--engine onnxruntime runs models wrapped from ONNX (python -m model.wrap --onnx); {ask.model_dir} is a "
      "SavedModel: use --engine auto, openvino or tensorflow"
    )
  if ask.mixed_precision and ask.precision not in ("auto", "fp32"):
    raise EngineError(
      f"--mixed_precision (TensorFlow float16 on GPUs) and --precision {ask.precision} exclude each other; drop one"
    )
  if engine == "auto":
    if ask.gpu or ask.mixed_precision:
      engine, why = "tensorflow", ("a GPU is visible" if ask.gpu else "--mixed_precision runs on TensorFlow")
    elif ask.has_openvino:
      engine, why = "openvino", "no GPU visible; OpenVINO is the fastest CPU engine"
    else:
      engine, why = "tensorflow", "no GPU visible but OpenVINO is not installed"
  else:
    why = "--engine " + engine
  if engine == "tensorflow":
    if ask.precision in ("bf16", "int8"):
      raise EngineError(
        f"--precision {ask.precision} runs on the OpenVINO engine only; use --engine openvino (or auto on a CPU), "
        "or --precision fp32"
      )
    return EngineChoice("tensorflow", "mixed_float16" if ask.mixed_precision else "fp32", why)
  if not ask.has_openvino:
    raise EngineError(
      "--engine openvino needs the openvino package: pip install -c requirements.lock openvino "
      "(it is part of the default install), or use --engine tensorflow"
    )
  if ask.mixed_precision:
    raise EngineError("--mixed_precision is TensorFlow's GPU float16; with --engine openvino use --precision bf16")
  return _openvino(ask, why)


def _choose_for_flips(ask: _Ask) -> EngineChoice:
  """``--tta flips``: OpenVINO on every machine (GPU workers included), since only its graph exposes probabilities."""
  engine = ask.engine
  if engine not in ("auto", "openvino") or ask.mixed_precision:
    flag = f"--engine {engine}" if engine not in ("auto", "openvino") else "--mixed_precision (TensorFlow's float16)"
    raise EngineError(
      f"--tta flips averages the class probabilities inside the OpenVINO engine's graph, so {flag} cannot run it; "
      "use --engine auto or openvino, or drop --tta"
    )
  if not ask.has_openvino:
    raise EngineError("--tta flips runs on the OpenVINO engine: pip install -c requirements.lock openvino")
  why = "--engine openvino" if engine == "openvino" else "--tta flips runs on the OpenVINO engine"
  return _openvino(ask, why)


def _openvino(ask: _Ask, why: str) -> EngineChoice:
  if ask.precision == "auto":
    if ask.features.bf16:
      return EngineChoice("openvino", "bf16", f"{why}; the CPU has bf16 instructions")
    return EngineChoice("openvino", "fp32", f"{why}; the CPU has no bf16 instructions (AMX or AVX-512 BF16)")
  if ask.precision == "bf16" and not ask.features.bf16:
    raise EngineError(
      f"--precision bf16 needs AMX or AVX-512 BF16 instructions, which this CPU ({ask.features.name}) lacks; "
      "use --precision auto or fp32"
    )
  if ask.precision == "int8" and not ask.has_int8:
    raise EngineError(
      f"--precision int8 needs an int8 model in {ask.model_dir}/openvino/, which it does not have; make one with "
      f"python -m model.quantize --model {ask.model_dir} (it checks the int8 masks against fp32 first)"
    )
  return EngineChoice("openvino", ask.precision, why)


def _choose_for_onnx(ask: _Ask) -> EngineChoice:
  """The rules for a model wrapped from ONNX: OpenVINO on CPUs, onnxruntime-gpu on GPUs, never TensorFlow."""
  engine = ask.engine
  if engine == "tensorflow" or ask.mixed_precision:
    flag = "--engine tensorflow" if engine == "tensorflow" else "--mixed_precision (TensorFlow's float16)"
    raise EngineError(
      f"{flag} cannot run {ask.model_dir}: it was wrapped from ONNX and has no SavedModel; use --engine auto "
      "(OpenVINO on CPUs, onnxruntime-gpu on GPUs)"
    )
  cuda = "CUDAExecutionProvider" in ask.providers
  if engine == "auto":
    if ask.gpu and cuda:
      engine, why = "onnxruntime", "a GPU is visible and onnxruntime-gpu is installed (ONNX model)"
    elif ask.gpu:
      raise EngineError(
        f"a GPU is visible but {ask.model_dir} is an ONNX model, which runs on GPUs through onnxruntime-gpu: "
        f"{ONNX_GPU_INSTALL}; or hide the GPU (CUDA_VISIBLE_DEVICES=) to run it on the CPU"
      )
    elif ask.has_openvino:
      engine, why = "openvino", "no GPU visible; OpenVINO is the fastest CPU engine (ONNX model)"
    elif ask.providers:
      engine, why = "onnxruntime", "no GPU visible and OpenVINO is not installed (ONNX model)"
    else:
      raise EngineError(
        f"{ask.model_dir} is an ONNX model and neither OpenVINO nor onnxruntime is installed: "
        "pip install -c requirements.lock openvino"
      )
  else:
    why = "--engine " + engine
  if engine == "onnxruntime":
    if not ask.providers:
      raise EngineError(
        "--engine onnxruntime needs onnxruntime: pip install -c requirements.lock onnxruntime (CPU) or "
        + ONNX_GPU_INSTALL
      )
    if ask.precision not in ("auto", "fp32"):
      raise EngineError(f"--precision {ask.precision} runs on the OpenVINO engine only; onnxruntime runs fp32")
    device = "CUDA" if ask.gpu and cuda else "CPU"
    return EngineChoice("onnxruntime", "fp32", f"{why}; {device}")
  if not ask.has_openvino:
    raise EngineError("--engine openvino needs the openvino package: pip install -c requirements.lock openvino")
  return _openvino(ask, why)
