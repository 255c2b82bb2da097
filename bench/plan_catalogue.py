"""The cloud catalogue the capacity plan prices against: machine shapes, GPU peaks, usual GPU machines, list prices.

Published figures, not measurements (those are ``bench.plan_costs``); every
price can be overridden with a ``python -m bench.plan`` flag.
"""

import re
from typing import Optional

PRICE_SOURCE = (
  "USD, us-central1 list prices as published in 2024: cloud.google.com/dataflow/pricing (batch "
  "vCPU, memory, disk, Dataflow Shuffle, GPUs) and cloud.google.com/storage/pricing (Standard); "
  "not re-checked from this offline machine"
)
PRICES = {
  "vcpu_hour": 0.056,  # Dataflow batch worker vCPU per hour
  "gb_hour": 0.003557,  # Dataflow batch worker memory per GB-hour
  "pd_gb_hour": 0.000054,  # standard persistent disk per GB-hour
  "shuffle_gb": 0.011,  # Dataflow Shuffle (batch), per GB processed, before volume discounts
  "storage_gb_month": 0.020,  # Cloud Storage Standard, per GB-month
  "class_a_per_1000": 0.005,  # Cloud Storage object writes (each mask: write + rename = 2)
  "class_b_per_1000": 0.0004,  # Cloud Storage object reads
}
GPU_HOUR = {"nvidia-tesla-t4": 0.35, "nvidia-l4": 0.56, "nvidia-tesla-a100": 2.93, "nvidia-a100-80gb": 3.93}
# Published dense float16 tensor-core peaks, TFLOPS (NVIDIA data sheets; no sparsity).
GPU_FP16_TFLOPS = {
  "nvidia-tesla-t4": 65.0,
  "nvidia-l4": 121.0,
  "nvidia-tesla-a100": 312.0,
  "nvidia-a100-80gb": 312.0,
  "nvidia-tesla-v100": 125.0,
  "nvidia-tesla-p100": 18.7,
  "nvidia-tesla-p4": 5.5,
  "nvidia-h100-80gb": 989.0,
  "nvidia-h100-mega-80gb": 989.0,
}
# The same by the short names a measurement file may use for its device ("NVIDIA H200").
_PEAK_BY_NAME = {
  "h200": 989.0,
  "h100": 989.0,
  "a100": 312.0,
  "l4": 121.0,
  "t4": 65.0,
  "v100": 125.0,
  "p100": 18.7,
  "p4": 5.5,
}
DEFAULT_GPU_MACHINE = {
  "nvidia-tesla-t4": "n1-standard-8",
  "nvidia-tesla-p4": "n1-standard-8",
  "nvidia-tesla-p100": "n1-standard-8",
  "nvidia-tesla-v100": "n1-standard-8",
  "nvidia-l4": "g2-standard-8",
  "nvidia-tesla-a100": "a2-highgpu-1g",
  "nvidia-a100-80gb": "a2-ultragpu-1g",
  "nvidia-h100-80gb": "a3-highgpu-1g",
  "nvidia-h100-mega-80gb": "a3-megagpu-8g",
}
# GB of memory per vCPU by machine family-kind; A2/A3 machines are listed whole.
_GB_PER_VCPU = {
  "n1-standard": 3.75,
  "n1-highmem": 6.5,
  "n1-highcpu": 0.9,
  "n2-standard": 4,
  "n2-highmem": 8,
  "n2-highcpu": 1,
  "n2d-standard": 4,
  "e2-standard": 4,
  "e2-highmem": 8,
  "e2-highcpu": 1,
  "c2-standard": 4,
  "c2d-standard": 4,
  "t2d-standard": 4,
  "c3-standard": 4,
  "c3d-standard": 4,
  "n4-standard": 4,
  "c4-standard": 3.75,
  "c4d-standard": 3.875,
  "n4d-standard": 4,
  "g2-standard": 4,
}
_WHOLE_MACHINES = {
  # A2 machines scale with their A100s: 12 vCPUs and 85 GB (40 GB cards) or 170 GB (80 GB cards) per GPU.
  **{f"a2-highgpu-{gpus}g": (12 * gpus, 85 * gpus) for gpus in (1, 2, 4, 8)},
  **{f"a2-ultragpu-{gpus}g": (12 * gpus, 170 * gpus) for gpus in (1, 2)},
  "a3-highgpu-1g": (26, 234),
  "a3-highgpu-8g": (208, 1872),
  "a3-megagpu-8g": (208, 1872),
}


# CPU workers: which processor each x86 Compute Engine family runs on, and the instruction-set class that decides the
# engine (model.engines.choice) and the measured rate that stands in for it (bench.plan_costs.CPU_RATES).
CPU_PLATFORM_SOURCE = (
  "processors per family: cloud.google.com/compute/docs/cpu-platforms as published, not re-checked from this offline "
  "machine (C4 on Emerald or Granite Rapids confirmed in docs.cloud.google.com/compute/docs/instances/"
  "specify-min-cpu-platform); Dataflow: any x86 or Arm machine type (docs.cloud.google.com/dataflow/docs/guides/"
  "configure-worker-vm), n4-standard-2 and c4-standard-2 named as workers (.../guides/auto-vm-selection)"
)
# Instruction-set classes: a name for the table and the /proc/cpuinfo flags a CPU of the class reports.
FEATURE_CLASSES = {
  "amx": (
    "AMX, AVX-512 BF16, VNNI",
    ("amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2"),
  ),
  "avx512_bf16": ("AVX-512 BF16, VNNI; no AMX", ("avx512_bf16", "avx512_vnni", "avx512f", "avx2")),
  "vnni": ("AVX-512 VNNI; no bf16", ("avx512_vnni", "avx512f", "avx2")),
  "avx2": ("AVX2 only", ("avx2",)),
}
# family: (processor, feature class, Dataflow workers). A family that runs on several processors is classed by its
# weakest; Arm families (T2A, C4A) are left out: no measurement of the model on Arm.
CPU_FAMILIES = {
  "n1": ("Intel Skylake/Broadwell/Haswell", "avx2", "yes"),
  "e2": ("Intel or AMD, Google's pick", "avx2", "yes"),
  "n2": ("Intel Cascade Lake/Ice Lake", "vnni", "yes"),
  "c2": ("Intel Cascade Lake", "vnni", "yes"),
  "n2d": ("AMD EPYC Rome/Milan", "avx2", "yes"),
  "c2d": ("AMD EPYC Milan", "avx2", "yes"),
  "t2d": ("AMD EPYC Milan", "avx2", "yes"),
  "c3": ("Intel Sapphire Rapids", "amx", "yes"),
  "c3d": ("AMD EPYC Genoa", "avx512_bf16", "yes"),
  "n4": ("Intel Emerald Rapids", "amx", "yes"),
  "c4": ("Intel Emerald/Granite Rapids", "amx", "yes"),
  "c4d": ("AMD EPYC Turin", "avx512_bf16", "unsure"),
  "n4d": ("AMD EPYC Turin", "avx512_bf16", "unsure"),
}


def family_of(machine_type: str) -> str:
  """'c3-standard-8' -> 'c3'."""
  return (machine_type or "").split("-")[0]


class PlanError(ValueError):
  """A bad combination of inputs; the message says what to change."""


def machine_shape(machine_type: str):
  """(vCPUs, GB of memory) of a Compute Engine machine type."""
  if machine_type in _WHOLE_MACHINES:
    return _WHOLE_MACHINES[machine_type]
  match = re.fullmatch(r"([a-z0-9]+-[a-z]+)-(\d+)", machine_type or "")
  if not match or match.group(1) not in _GB_PER_VCPU:
    known = ", ".join(sorted(f"{k}-N" for k in _GB_PER_VCPU) + sorted(_WHOLE_MACHINES))
    raise PlanError(f"--machine_type {machine_type!r} is not one the plan knows; use one of {known}")
  vcpus = int(match.group(2))
  return vcpus, vcpus * _GB_PER_VCPU[match.group(1)]


def peak_for(device: str) -> Optional[float]:
  """The float16 peak (TFLOPS) of a device named as a measurement file names it ("NVIDIA H200"), or None."""
  text = (device or "").lower()
  for key, peak in _PEAK_BY_NAME.items():
    if key in text:
      return peak
  return None
