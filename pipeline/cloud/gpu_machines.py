"""Compute Engine's GPU machines: which GPU types attach to which machine types, how many, and their vCPUs.

Compute Engine's published machine types, kept apart from the Dataflow
flags and their checks (``pipeline.cloud.dataflow``) because they change when
Google adds machine types, and the flags do not.
"""

import re
from typing import Optional

# GPU type -> machine type prefixes Compute Engine attaches it to.
GPU_MACHINE_PREFIXES = {
  "nvidia-tesla-t4": ("n1-",),
  "nvidia-tesla-p4": ("n1-",),
  "nvidia-tesla-p100": ("n1-",),
  "nvidia-tesla-v100": ("n1-",),
  "nvidia-l4": ("g2-",),
  "nvidia-tesla-a100": ("a2-highgpu-", "a2-megagpu-"),
  "nvidia-a100-80gb": ("a2-ultragpu-",),
  "nvidia-h100-80gb": ("a3-highgpu-",),
  "nvidia-h100-mega-80gb": ("a3-megagpu-",),
}
GPU_TYPES = tuple(sorted(GPU_MACHINE_PREFIXES))
# GPUs per N1 VM (N1 machines take the GPUs you attach, within these counts).
N1_GPU_COUNTS = {
  "nvidia-tesla-t4": (1, 2, 4),
  "nvidia-tesla-p4": (1, 2, 4),
  "nvidia-tesla-p100": (1, 2, 4),
  "nvidia-tesla-v100": (1, 2, 4, 8),
}
# G2 machines come with a fixed number of L4s.
G2_GPU_COUNTS = {
  "g2-standard-4": 1,
  "g2-standard-8": 1,
  "g2-standard-12": 1,
  "g2-standard-16": 1,
  "g2-standard-24": 2,
  "g2-standard-32": 1,
  "g2-standard-48": 4,
  "g2-standard-96": 8,
}
# A2/A3 names end in the GPU count: a2-highgpu-2g, a3-megagpu-8g.
_FIXED_COUNT_SUFFIX = re.compile(r"^(a2|a3)-[a-z]+-(\d+)g$")
# vCPUs of machine types whose name does not end in the count (A2/A3 end in the GPU count).
_WHOLE_MACHINE_VCPUS = {
  "a2-highgpu-1g": 12,
  "a2-highgpu-2g": 24,
  "a2-highgpu-4g": 48,
  "a2-highgpu-8g": 96,
  "a2-megagpu-16g": 96,
  "a2-ultragpu-1g": 12,
  "a2-ultragpu-2g": 24,
  "a2-ultragpu-4g": 48,
  "a2-ultragpu-8g": 96,
  "a3-highgpu-1g": 26,
  "a3-highgpu-2g": 52,
  "a3-highgpu-4g": 104,
  "a3-highgpu-8g": 208,
  "a3-megagpu-8g": 208,
}
# A machine type to suggest for each GPU type that does not attach to N1.
EXAMPLE_MACHINE = {
  "nvidia-l4": "g2-standard-8",
  "nvidia-tesla-a100": "a2-highgpu-1g",
  "nvidia-a100-80gb": "a2-ultragpu-1g",
  "nvidia-h100-80gb": "a3-highgpu-1g",
  "nvidia-h100-mega-80gb": "a3-megagpu-8g",
}


def gpu_count_for(machine_type: str) -> Optional[int]:
  """GPUs that come with a G2/A2/A3 machine type; None for machines where you choose."""
  if machine_type in G2_GPU_COUNTS:
    return G2_GPU_COUNTS[machine_type]
  match = _FIXED_COUNT_SUFFIX.match(machine_type)
  return int(match.group(2)) if match else None


def machine_vcpus(machine_type: Optional[str]) -> Optional[int]:
  """vCPUs of a Compute Engine machine type (n1-standard-8 -> 8, a2-highgpu-1g -> 12); None if unknown."""
  if not machine_type:
    return None
  if machine_type in _WHOLE_MACHINE_VCPUS:
    return _WHOLE_MACHINE_VCPUS[machine_type]
  match = re.fullmatch(r"[a-z0-9]+-(?:standard|highmem|highcpu)-(\d+)", machine_type)
  return int(match.group(1)) if match else None
