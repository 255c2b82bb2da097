"""The capacity plan's measured costs: per-pixel CPU, decode and byte figures, and readers for what the benchmarks
wrote (``docs/PERFORMANCE.json``'s CPU ceiling, ``docs/PERFORMANCE_GPU.json``'s GPU ceiling) and for another model's
FLOPs per pixel. ``bench.plan``'s docstring says where each number comes from.
"""

import json
import os
import re
from typing import Optional

from bench.procs import REPO

PERFORMANCE_JSON = os.path.join(REPO, "docs", "PERFORMANCE.json")
PERFORMANCE_GPU_JSON = os.path.join(REPO, "docs", "PERFORMANCE_GPU.json")

# Measured on this machine (see the module docstring); overridable.
DEFAULT_CEILING_IMAGES_PER_S = 30.472  # bundled model, 512x512, 2 vCPUs (docs/PERFORMANCE.json run 5)
DEFAULT_CEILING_PIXELS = 512 * 512
DEFAULT_CEILING_VCPUS = 2
DEFAULT_MODEL_FLOPS_PER_PIXEL = (
  15225.9  # bundled model v1.1.0 (FCN-2s; v1.0.0 FCN-8s: 15,053), convolutions + transposed convolutions
)
DECODE_S_PER_PIXEL = {"png": 8.1e-3 / 512**2, "jpeg": 0.1 * 8.1e-3 / 512**2}
OTHER_S_PER_PIXEL = 32e-9  # the pipeline beyond model and decode, per pixel, one vCPU
ENCODED_BYTES_PER_PIXEL = {"png": 2.25, "jpeg": 0.39}  # bench workload PNGs; the same as JPEG quality 90
STITCH_BYTES_PER_PIXEL = 0.027
OVERLAY_BYTES_PER_PIXEL = 2.28
MASK_BYTES_PER_PIXEL = 0.0181
RECORD_BYTES = 1160
REF_OVERHEAD_BYTES = 70

# CPU engines: the bundled model alone at 512x512 on two 2-vCPU machines, images/s for the whole machine (the best
# batch measured). Keyed by feature class (bench.plan_catalogue.FEATURE_CLASSES), then (engine, precision).
RATE_PIXELS = 512 * 512
CPU_RATE_SOURCES = {
  "epyc": (
    "AMD EPYC, 2 vCPUs, AVX2 only (this repository's machine), model alone, openvino 2026.4.1 static shapes, "
    "measured 2026-12-02: TensorFlow batch 8, OpenVINO best of batch 1-8 (12.3-12.7; 6.6 with 1 thread)"
  ),
  "xeon": (
    "Intel Xeon, 2 vCPUs, AVX-512 + VNNI + AVX-512 BF16 + AMX, model alone, measured 2026-12-02: best of "
    "batch 1/16 (TensorFlow fp32 26.2/30.0, OpenVINO fp32 34.6/36.3, bf16 59.1/62.7); int8 not measured there"
  ),
}
CPU_RATES = {
  "avx2": {
    ("tensorflow", "fp32"): (9.4, 2, "epyc"),
    ("openvino", "fp32"): (12.7, 2, "epyc"),
    ("openvino", "int8"): (12.8, 2, "epyc"),
  },
  "amx": {
    ("tensorflow", "fp32"): (30.0, 2, "xeon"),
    ("openvino", "fp32"): (36.3, 2, "xeon"),
    ("openvino", "bf16"): (62.7, 2, "xeon"),
  },
}


def ceiling_from_bench(path: str = PERFORMANCE_JSON):
  """(images/s, pixels per image, vCPUs) of the bundled model's ceiling in ``python -m bench``'s JSON."""
  try:
    with open(path) as handle:
      report = json.load(handle)
    run = next(r for r in report["runs"] if r.get("name") == "ceiling[default]")
    side = int(re.search(r"(\d+)\^2", run["set"]).group(1))
    source = os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path
    return float(run["images_per_s"]), side * side, int(report["meta"]["cpus"]), source
  except Exception:  # a missing or reshaped report: use the recorded numbers
    return DEFAULT_CEILING_IMAGES_PER_S, DEFAULT_CEILING_PIXELS, DEFAULT_CEILING_VCPUS, "built-in (run 5)"


def feature_class(flags) -> str:
  """The instruction-set class of a CPU from its /proc/cpuinfo flags."""
  flags = set(flags or ())
  if flags & {"amx_bf16", "amx_int8"}:
    return "amx"
  if "avx512_bf16" in flags:
    return "avx512_bf16"
  if flags & {"avx512_vnni", "avx_vnni"}:
    return "vnni"
  return "avx2"


def cpu_rates(path: str = PERFORMANCE_JSON):
  """CPU_RATES and CPU_RATE_SOURCES, with any "engine_ceiling" rows of ``python -m bench``'s JSON taking precedence.

  A row counts when it has ``mode`` "engine_ceiling", an ``engine``, a ``precision`` and ``images_per_s`` for the
  bundled model, and names its CPU's flags (``cpu.flags``, as ``model.engines.cpu.CpuFeatures.describe`` writes
  them, in the row or the report's ``meta``): without them the rate cannot be given a class. Its vCPUs are the row's
  ``threads``, else ``meta.cpus``; its size is scaled to 512x512. The best row per class, engine and precision wins.
  """
  rates = {cls: dict(entries) for cls, entries in CPU_RATES.items()}
  sources = dict(CPU_RATE_SOURCES)
  try:
    with open(path) as handle:
      report = json.load(handle)
    runs, meta = report.get("runs") or [], report.get("meta") or {}
  except (OSError, ValueError, AttributeError):  # missing or unreadable: the recorded rates
    return rates, sources
  found = {}
  for run in runs:
    if not isinstance(run, dict) or run.get("mode") != "engine_ceiling" or "default" not in str(run.get("model", "")):
      continue
    cpu = run.get("cpu") if isinstance(run.get("cpu"), dict) else meta.get("cpu")
    rate, vcpus = _number(run.get("images_per_s")), _number(run.get("threads")) or _number(meta.get("cpus"))
    if not (isinstance(cpu, dict) and isinstance(cpu.get("flags"), list) and rate and vcpus):
      continue
    per_vcpu_512 = rate / vcpus * (_entry_pixels(run) or RATE_PIXELS) / RATE_PIXELS
    key = (feature_class(cpu["flags"]), str(run.get("engine")), str(run.get("precision")))
    if per_vcpu_512 > found.get(key, (0,))[0]:
      found[key] = (per_vcpu_512, cpu.get("name") or "unknown CPU")
  source = os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path
  for (cls, engine, precision), (per_vcpu, name) in found.items():
    sources[f"bench:{name}"] = f"{name}, engine_ceiling rows of {source} (python -m bench)"
    rates.setdefault(cls, {})[(engine, precision)] = (per_vcpu, 1, f"bench:{name}")
  return rates, sources


def _number(value):
  return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _entry_pixels(entry: dict) -> Optional[int]:
  for key in ("pixels_per_image", "image_pixels"):
    if _number(entry.get(key)):
      return int(entry[key])
  for key in ("size", "image_size", "side", "tile_size"):
    value = entry.get(key)
    if _number(value):
      return int(value) ** 2
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v) for v in value):
      return int(value[0]) * int(value[1])
  for key in ("set", "workload", "name"):
    match = re.search(r"(\d+)\s*(?:\^2|[x×](\d+))", str(entry.get(key, "")))
    if match:
      return int(match.group(1)) * int(match.group(2) or match.group(1))
  return None


def gpu_measurement(path: str = PERFORMANCE_GPU_JSON):
  """The best measured model-ceiling pixel rate in PERFORMANCE_GPU.json: (pixels/s, device, detail) or None.

  ``bench.gpu_ceiling table`` writes it (``runs[].meta.device``,
  ``runs[].cells[]``); it is read defensively: any object with an images/s
  figure (``resident_images_per_s`` first: the network alone on the device,
  which scales with a GPU's peak; else ``images_per_s``,
  ``images_per_second``, ``ceiling_images_per_s``) for the bundled model (or
  no model named) counts;
  the image size comes from ``pixels_per_image``, ``size``, or a "512^2" /
  "512x512" in ``set``/``workload``/``name``, else 512x512. The device is the
  nearest ``device``/``gpu`` string. Returns None when nothing usable is there.
  """
  try:
    with open(path) as handle:
      document = json.load(handle)
  except (OSError, ValueError):  # missing, unreadable or not JSON
    return None
  found = []

  def walk(node, device):
    if isinstance(node, dict):
      meta = node.get("meta") if isinstance(node.get("meta"), dict) else {}
      device = next(
        (
          str(source[k])
          for source in (node, meta)
          for k in ("device", "gpu", "accelerator", "gpu_type")
          if isinstance(source.get(k), str)
        ),
        device,
      )
      # The network alone on the device (bench.gpu_ceiling --resident) is what scales with a GPU's peak;
      # the figure with host copies is bound by the bus of the machine it was measured on.
      rate = next(
        (
          _number(node.get(k))
          for k in ("resident_images_per_s", "images_per_s", "images_per_second", "ceiling_images_per_s")
          if _number(node.get(k))
        ),
        None,
      )
      model = str(node.get("model", "default"))
      if rate and ("default" in model or model == "deconvseg-default"):
        found.append((rate * (_entry_pixels(node) or 512 * 512), device, node))
      for value in node.values():
        walk(value, device)
    elif isinstance(node, list):
      for value in node:
        walk(value, device)

  walk(document, None)
  if not found:
    return None
  rate, device, node = max(found, key=lambda item: item[0])
  return rate, device or "unknown GPU", {k: v for k, v in node.items() if not isinstance(v, (dict, list))}


def model_flops_per_pixel(model_dir: str, side: int = 512) -> float:
  """FLOPs per input pixel of an exported model: its convolutions and transposed convolutions at side x side.

  Loads the SavedModel, freezes its ``segment`` function for one side x side
  image, runs it once to get every convolution's shapes, and counts
  2 x (output positions) x (kernel volume) per Conv2D, 2 x (input positions) x
  (kernel volume) per transposed convolution. Other ops are ignored.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # Imported here, not at the top: only a plan for another model's directory needs TensorFlow, and
  # python -m bench.plan for the bundled model starts in a fraction of a second without it.
  import numpy as np
  import tensorflow as tf
  from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

  with open(os.path.join(model_dir, "card.json")) as handle:
    card = json.load(handle)
  channels = int(card.get("input", {}).get("channels", 3))
  dtype = tf.as_dtype(card.get("input", {}).get("dtype", "uint8"))
  loaded = tf.saved_model.load(os.path.join(model_dir, "saved_model"))
  frozen = convert_variables_to_constants_v2(
    loaded.segment.get_concrete_function(tf.TensorSpec([1, side, side, channels], dtype))
  )
  graph = tf.Graph()
  with graph.as_default():
    tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
    convs = [op for op in graph.get_operations() if op.type in ("Conv2D", "Conv2DBackpropInput")]
    fetch = [(tf.shape(op.outputs[0]), tf.shape(op.inputs[1]), tf.shape(op.inputs[-1])) for op in convs]
    with tf.compat.v1.Session(graph=graph) as session:
      shapes = session.run(fetch, {frozen.inputs[0].name: np.zeros((1, side, side, channels), dtype.as_numpy_dtype)})
  total = 0
  for op, (out, kernel, last) in zip(convs, shapes):
    positions = out[:3] if op.type == "Conv2D" else last[:3]
    total += 2 * int(np.prod(positions)) * int(np.prod(kernel))
  return total / side**2
