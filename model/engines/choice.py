"""Which engine and precision a run uses: the flags, resolved against the machine and the model.

    --engine auto|tensorflow|openvino      --precision auto|fp32|bf16|int8

``auto`` picks TensorFlow where a GPU is visible (its CUDA kernels and
mixed precision are the fast path there) and OpenVINO on CPUs when it is
installed; ``--precision auto`` is bf16 where the CPU has bf16 instructions
and fp32 elsewhere. int8 is never chosen silently: it needs an int8 model
that passed its accuracy gate (``python -m model.quantize``). A request the
machine or the model cannot honour raises ``EngineError`` with one line that
says what to do, before any work.
"""

import importlib.util
from dataclasses import dataclass

ENGINES = ("auto", "tensorflow", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "int8")


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


def choose(
  engine: str,
  precision: str,
  *,
  features,
  gpu: bool,
  has_openvino: bool,
  has_int8: bool,
  mixed_precision: bool = False,
  model_dir: str = "the model",
) -> EngineChoice:
  """Resolves ``--engine``/``--precision`` (and ``--mixed_precision``) for this machine and model."""
  if engine not in ENGINES:
    raise EngineError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
  if precision not in PRECISIONS:
    raise EngineError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
  if mixed_precision and precision not in ("auto", "fp32"):
    raise EngineError(
      f"--mixed_precision (TensorFlow float16 on GPUs) and --precision {precision} exclude each other; drop one"
    )
  if engine == "auto":
    if gpu or mixed_precision:
      engine, why = "tensorflow", ("a GPU is visible" if gpu else "--mixed_precision runs on TensorFlow")
    elif has_openvino:
      engine, why = "openvino", "no GPU visible; OpenVINO is the fastest CPU engine"
    else:
      engine, why = "tensorflow", "no GPU visible but OpenVINO is not installed"
  else:
    why = "--engine " + engine
  if engine == "tensorflow":
    if precision in ("bf16", "int8"):
      raise EngineError(
        f"--precision {precision} runs on the OpenVINO engine only; use --engine openvino (or auto on a CPU), "
        "or --precision fp32"
      )
    return EngineChoice("tensorflow", "mixed_float16" if mixed_precision else "fp32", why)
  if not has_openvino:
    raise EngineError(
      "--engine openvino needs the openvino package: pip install -c requirements.lock openvino "
      "(it is part of the default install), or use --engine tensorflow"
    )
  if mixed_precision:
    raise EngineError("--mixed_precision is TensorFlow's GPU float16; with --engine openvino use --precision bf16")
  if precision == "auto":
    if features.bf16:
      return EngineChoice("openvino", "bf16", f"{why}; the CPU has bf16 instructions")
    return EngineChoice("openvino", "fp32", f"{why}; the CPU has no bf16 instructions (AMX or AVX-512 BF16)")
  if precision == "bf16" and not features.bf16:
    raise EngineError(
      f"--precision bf16 needs AMX or AVX-512 BF16 instructions, which this CPU ({features.name}) lacks; "
      "use --precision auto or fp32"
    )
  if precision == "int8" and not has_int8:
    raise EngineError(
      f"--precision int8 needs an int8 model in {model_dir}/openvino/, which it does not have; make one with "
      f"python -m model.quantize --model {model_dir} (it checks the int8 masks against fp32 first)"
    )
  return EngineChoice("openvino", precision, why)
