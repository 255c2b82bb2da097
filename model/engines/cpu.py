"""What this machine can do for inference, read from the machine rather than assumed.

bf16 pays off only where the CPU has matrix or vector bf16 instructions
(Intel AMX, AVX-512 BF16); int8 only with VNNI or AMX int8. The flags come
from ``/proc/cpuinfo`` on Linux (what Dataflow and SLURM workers run);
elsewhere OpenVINO's CPU plugin is asked for its optimisation capabilities.
A visible NVIDIA GPU is found from the driver's device files, so choosing an
engine never imports a deep-learning framework.
"""

import functools
import glob
import os
from dataclasses import dataclass
from typing import Any, FrozenSet

# Flags that matter for the engines, in the order they are reported.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")
REPORTED_FLAGS = ("amx_tile",) + BF16_FLAGS + INT8_FLAGS + ("avx512f", "avx2")


@dataclass(frozen=True)
class CpuFeatures:
  """The CPU's name and the instruction-set flags relevant to inference."""

  name: str
  flags: FrozenSet[str]

  @property
  def bf16(self) -> bool:
    """bf16 arithmetic in hardware (AMX tiles or AVX-512 BF16)."""
    return any(flag in self.flags for flag in BF16_FLAGS)

  @property
  def amx(self) -> bool:
    return "amx_bf16" in self.flags or "amx_int8" in self.flags

  @property
  def int8(self) -> bool:
    """int8 dot products in hardware (VNNI or AMX int8)."""
    return any(flag in self.flags for flag in INT8_FLAGS)

  def describe(self) -> dict[str, Any]:
    """The block recorded in summary.json and the report."""
    return {
      "name": self.name,
      "flags": [flag for flag in REPORTED_FLAGS if flag in self.flags],
      "bf16": self.bf16,
      "amx": self.amx,
      "int8_dot_product": self.int8,
      "cores": os.cpu_count(),
    }


def _from_cpuinfo(text: str) -> CpuFeatures:
  name = "unknown CPU"
  flags: frozenset[str] = frozenset()
  for line in text.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "model name" and name == "unknown CPU":
      name = value.strip()
    elif key == "flags" and not flags:
      flags = frozenset(value.split())
  return CpuFeatures(name, flags)


def _from_openvino() -> CpuFeatures:
  """OpenVINO's view (macOS, Windows): capability names mapped onto the Linux flag names."""
  try:
    import openvino

    core = openvino.Core()
    capabilities = set(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    name = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
  except Exception:
    return CpuFeatures("unknown CPU", frozenset())
  flags: set[str] = set()
  if "BF16" in capabilities:
    flags.add("avx512_bf16")
  return CpuFeatures(name, frozenset(flags))


@functools.lru_cache(maxsize=1)
def probe() -> CpuFeatures:
  """This machine's CPU features (read once per process)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
      return _from_cpuinfo(handle.read())
  except OSError:
    return _from_openvino()


def gpu_visible() -> bool:
  """True when an NVIDIA GPU is present and not hidden by CUDA_VISIBLE_DEVICES."""
  hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
  if hidden is not None and hidden.strip() in ("", "-1"):
    return False
  return bool(glob.glob("/proc/driver/nvidia/gpus/*") or glob.glob("/dev/nvidia[0-9]*"))
