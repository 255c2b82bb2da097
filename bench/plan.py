"""Capacity plan for a nightly batch: workers, wall time, shuffle, storage and cost. An estimate.

    python -m bench.plan --images 1000000 --size 1024 --gpu_type nvidia-tesla-t4
    python -m bench.plan --images 1000000 --size 1024 --machine_type n1-standard-8
    python -m bench.plan --images 50000 --size 4000x3000 --format jpeg --model gs-copy/my-model --json

Where the numbers come from
---------------------------
* **CPU cost of the model** per pixel, CPU workers: the rate per vCPU of the
  engine ``--engine auto`` runs on the machine's family (OpenVINO bf16 on AMX
  and AVX-512 BF16 families, OpenVINO fp32 elsewhere), measured per
  instruction-set class at 512x512 on 2-vCPU machines (``bench.plan_cpu``;
  "engine_ceiling" rows of ``docs/PERFORMANCE.json`` first) or given with
  ``--cpu_rate FAMILY=IMAGES_PER_VCPU_S``; the table "CPU workers (estimate)"
  compares every family by cost per million images. A family the table does
  not know uses the TensorFlow ceiling of ``python -m bench``
  (``docs/PERFORMANCE.json`` run "ceiling[default]"). Another model is scaled
  by its FLOPs per pixel against the bundled model's (counted from the
  SavedModel's convolutions, ``model_flops_per_pixel``).
* **Decode and the rest of the pipeline** per pixel: PNG decode 8.1 ms per
  512x512 image (docs/PERFORMANCE.md), JPEG 0.1 x of that (measured side by
  side), and what the pipeline spends beyond model + decode on 2,000 images
  (25.0 images/s against the model's 31.5: 32 ns per pixel).
* **GPU**: ``docs/PERFORMANCE_GPU.json`` when it exists (a measured model
  ceiling in images/s on one GPU, scaled to the planned GPU by published
  float16 tensor peaks), otherwise an estimate: the model's FLOPs against the
  GPU's published dense float16 peak times ``--gpu_efficiency`` (default
  10 %). The host CPUs still decode and encode; the worker goes as fast as the
  slower of the two.
* **Bytes**: ref shuffle per image = URI + 2 x key + ~70 bytes of coder
  overhead (``transforms.accounting``); TFRecord inputs add the image bytes;
  images above ``--whole_image_pixels`` cross the stitch shuffle as zlib class
  ids (0.027 bytes per pixel, measured on the bench workload) plus RGB overlay
  crops with ``--overlays``. Masks 0.0181 bytes per pixel and a statistics
  record 1,160 bytes (the 10,000-image run of ``python -m bench.scale``:
  47,544,544 bytes of masks and 11,579,821 of stats for 10,000 images of 512x512).
* **Prices**: ``PRICES`` (USD, us-central1, Dataflow batch and Cloud Storage
  list prices as published in 2024 at cloud.google.com/dataflow/pricing and
  cloud.google.com/storage/pricing; not re-checked from this offline machine),
  each overridable with a flag.
"""

# This module is the arithmetic (plan), its rendering and the command; the docstring above is --help. The cloud's
# published figures are bench.plan_catalogue, the measured costs and the readers of the benchmarks' JSON
# bench.plan_costs.

import argparse
import json
import math
import os
import re
import sys
from typing import Optional

from bench.plan_catalogue import (
  DEFAULT_GPU_MACHINE,
  GPU_FP16_TFLOPS,
  GPU_HOUR,
  PRICE_SOURCE,
  PRICES,
  PlanError,
  family_of,
  machine_shape,
  peak_for,
)
from bench.plan_costs import (
  DECODE_S_PER_PIXEL,
  DEFAULT_MODEL_FLOPS_PER_PIXEL,
  ENCODED_BYTES_PER_PIXEL,
  MASK_BYTES_PER_PIXEL,
  OTHER_S_PER_PIXEL,
  OVERLAY_BYTES_PER_PIXEL,
  PERFORMANCE_GPU_JSON,
  PERFORMANCE_JSON,
  RECORD_BYTES,
  REF_OVERHEAD_BYTES,
  STITCH_BYTES_PER_PIXEL,
  ceiling_from_bench,
  gpu_measurement,
  model_flops_per_pixel,
)
from bench.plan_cpu import cpu_table, parse_cpu_rates, render_cpu_table

FORMATS = ("png", "jpeg", "tfrecord-png", "tfrecord-jpeg")


def parse_size(text: str):
  """'1024' -> (1024, 1024); '4000x3000' -> (4000, 3000)."""
  match = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*", str(text))
  if not match:
    raise PlanError(f"--size {text!r}: give a side in pixels (1024) or WIDTHxHEIGHT (4000x3000)")
  width = int(match.group(1))
  height = int(match.group(2) or width)
  if width < 1 or height < 1:
    raise PlanError(f"--size {text!r}: sides must be at least 1 pixel")
  return width, height


def plan(
  images: int,
  size,
  fmt: str = "png",
  model: str = "default",
  machine_type: Optional[str] = None,
  gpu_type: Optional[str] = None,
  gpu_count: int = 1,
  window_hours: float = 6.0,
  max_workers: Optional[int] = None,
  overlays: bool = False,
  image_bytes: Optional[float] = None,
  whole_image_pixels: int = 4 * 512 * 512,
  flops_per_pixel: Optional[float] = None,
  gpu_efficiency: float = 0.10,
  host_cpu_efficiency: float = 0.6,
  startup_minutes: Optional[float] = None,
  disk_gb: float = 25.0,
  retention_months: float = 1.0,
  uri_bytes: int = 60,
  prices: Optional[dict] = None,
  gpu_hour: Optional[float] = None,
  gpu_json: str = PERFORMANCE_GPU_JSON,
  bench_json: str = PERFORMANCE_JSON,
  cpu_rate=None,
):
  """The plan as a dict (every figure an estimate); raises PlanError for impossible inputs."""
  if images < 1:
    raise PlanError(f"--images {images}: plan for at least one image")
  if fmt not in FORMATS:
    raise PlanError(f"--format {fmt!r}: one of {', '.join(FORMATS)}")
  if window_hours <= 0:
    raise PlanError(f"--window_hours {window_hours}: must be more than 0")
  if gpu_count < 1:
    raise PlanError(f"--gpu_count {gpu_count}: at least 1")
  if max_workers is not None and max_workers < 1:
    raise PlanError(f"--max_workers {max_workers}: at least 1")
  if not 0 < gpu_efficiency <= 1 or not 0 < host_cpu_efficiency <= 1:
    raise PlanError("--gpu_efficiency and --host_cpu_efficiency are fractions in (0, 1]")
  if gpu_type is not None and gpu_type not in DEFAULT_GPU_MACHINE:
    raise PlanError(f"--gpu_type {gpu_type!r}: one of {', '.join(sorted(DEFAULT_GPU_MACHINE))}")
  width, height = size if isinstance(size, tuple) else parse_size(size)
  pixels = width * height
  prices = dict(PRICES, **(prices or {}))
  machine_type = machine_type or (DEFAULT_GPU_MACHINE[gpu_type] if gpu_type else "n1-standard-4")
  vcpus, memory_gb = machine_shape(machine_type)
  notes = []

  # Model cost: measured for the bundled model, scaled by FLOPs for another one.
  default_flops = DEFAULT_MODEL_FLOPS_PER_PIXEL
  if flops_per_pixel is None:
    flops_per_pixel = default_flops if model in (None, "", "default") else model_flops_per_pixel(model)
  user_rates = cpu_rate if isinstance(cpu_rate, dict) else parse_cpu_rates(cpu_rate)
  cpus = cpu_table(prices, pixels, flops_per_pixel, user_rates, vcpus if vcpus in (4, 8) else 8, bench_json)
  family = next((row for row in cpus["families"] if row["family"] == family_of(machine_type)), None)
  if family:
    model_cpu_s_per_px = 1 / (family["images_per_vcpu_s"] * pixels)
    cpu_model_source = (
      f"{family['engine']} (--engine auto on {family['family']}: {family['features']}), "
      f"{family['images_per_vcpu_s']:.2f} images/s per vCPU at this size ({family['basis']})"
    )
  else:
    ceiling, ceiling_pixels, ceiling_vcpus, ceiling_source = ceiling_from_bench(bench_json)
    model_cpu_s_per_px = ceiling_vcpus / (ceiling * ceiling_pixels) * flops_per_pixel / default_flops
    cpu_model_source = f"{ceiling} images/s at {ceiling_pixels} px on {ceiling_vcpus} vCPUs ({ceiling_source})"
  base_format = fmt.split("-")[-1]
  host_cpu_s_per_px = DECODE_S_PER_PIXEL[base_format] + OTHER_S_PER_PIXEL
  encoded = image_bytes if image_bytes else ENCODED_BYTES_PER_PIXEL[base_format] * pixels

  if gpu_type:
    measured = gpu_measurement(gpu_json)
    target_peak = GPU_FP16_TFLOPS[gpu_type]
    if measured and peak_for(measured[1]):
      gpu_px_per_s = measured[0] * target_peak / peak_for(measured[1]) * default_flops / flops_per_pixel
      gpu_source = (
        f"measured model ceiling on {measured[1]} ({os.path.basename(gpu_json)}), scaled to "
        f"{gpu_type} by float16 peak ({target_peak:g} / {peak_for(measured[1]):g} TFLOPS)"
      )
    else:
      gpu_px_per_s = target_peak * 1e12 * gpu_efficiency / flops_per_pixel
      gpu_source = (
        f"ESTIMATE, not measured: {flops_per_pixel:,.0f} FLOPs per pixel at "
        f"{gpu_efficiency:.0%} of the {gpu_type}'s {target_peak:g} TFLOPS float16 peak"
      )
      if measured:
        notes.append(
          f"{os.path.basename(gpu_json)} names a device the plan has no peak for ({measured[1]}); it was not used"
        )
    host_px_per_s = vcpus * host_cpu_efficiency / host_cpu_s_per_px
    if gpu_count > 1:
      notes.append(
        f"{gpu_count} GPUs per worker: each SDK process drives the first GPU it sees "
        "(pipeline/cloud/dataflow.py), so the plan counts one; single-GPU workers use what they pay for"
      )
    worker_px_per_s = min(gpu_px_per_s, host_px_per_s)
    limit = "GPU" if gpu_px_per_s <= host_px_per_s else "host CPUs (decode, encode)"
    startup = 10.0 if startup_minutes is None else startup_minutes
  else:
    gpu_px_per_s = host_px_per_s = None
    worker_px_per_s = vcpus / (model_cpu_s_per_px + host_cpu_s_per_px)
    gpu_source = None
    limit = "CPUs (model, decode, encode)"
    startup = 5.0 if startup_minutes is None else startup_minutes

  worker_images_per_s = worker_px_per_s / pixels
  work_s = images / worker_images_per_s  # worker-seconds of processing
  usable_s = window_hours * 3600 - startup * 60
  if usable_s <= 0:
    raise PlanError(f"--window_hours {window_hours} is shorter than the workers' start-up ({startup:g} min)")
  workers = max(1, math.ceil(work_s / usable_s))
  if max_workers is not None and workers > max_workers:
    notes.append(f"--max_workers {max_workers} cannot finish within {window_hours:g} h; it needs {workers}")
    workers = max_workers
  wall_s = startup * 60 + work_s / workers
  worker_hours = workers * wall_s / 3600

  # Bytes.
  key_bytes = 20
  ref_bytes = uri_bytes + 2 * key_bytes + REF_OVERHEAD_BYTES + (encoded if fmt.startswith("tfrecord") else 0)
  stitched = pixels > whole_image_pixels
  stitch_bytes = pixels * (STITCH_BYTES_PER_PIXEL + (3 if overlays else 0)) if stitched else 0
  shuffle_bytes = images * (ref_bytes + stitch_bytes)
  written = images * (pixels * (MASK_BYTES_PER_PIXEL + (OVERLAY_BYTES_PER_PIXEL if overlays else 0)) + RECORD_BYTES)
  read = images * encoded
  objects_written = images * (2 if overlays else 1)

  gpu_price = gpu_hour if gpu_hour is not None else GPU_HOUR.get(gpu_type) if gpu_type else 0.0
  if gpu_type and gpu_price is None:
    raise PlanError(f"no list price for {gpu_type} in the plan: pass --gpu_hour PRICE")
  cost = {
    "vcpu": worker_hours * vcpus * prices["vcpu_hour"],
    "memory": worker_hours * memory_gb * prices["gb_hour"],
    "disk": worker_hours * disk_gb * prices["pd_gb_hour"],
    "gpu": worker_hours * gpu_count * gpu_price if gpu_type else 0.0,
    "shuffle": shuffle_bytes / 1e9 * prices["shuffle_gb"],
    "storage_operations": (
      objects_written * 2 / 1000 * prices["class_a_per_1000"] + images / 1000 * prices["class_b_per_1000"]
    ),
    "storage_per_retention": written / 1e9 * prices["storage_gb_month"] * retention_months,
  }
  cost["total"] = sum(cost.values())
  harness_threads = vcpus if gpu_type else None
  flags = [f"--max_num_workers={workers}", f"--machine_type={machine_type}"]
  if gpu_type:
    flags += [
      f"--gpu_type={gpu_type}",
      f"--gpu_count={gpu_count}",
      f"--number_of_worker_harness_threads={harness_threads}",
      "--batch_size=32",
      "--mixed_precision",
    ]
  return {
    "estimate": True,
    "inputs": {
      "images": images,
      "width": width,
      "height": height,
      "format": fmt,
      "model": model or "default",
      "machine_type": machine_type,
      "vcpus": vcpus,
      "memory_gb": memory_gb,
      "gpu_type": gpu_type,
      "gpu_count": gpu_count if gpu_type else 0,
      "window_hours": window_hours,
      "overlays": overlays,
    },
    "sources": {
      "cpu_model_cost": cpu_model_source,
      "model_flops_per_pixel": flops_per_pixel,
      "gpu": gpu_source,
      "prices": PRICE_SOURCE,
    },
    "per_worker": {
      "images_per_s": worker_images_per_s,
      "limited_by": limit,
      "gpu_images_per_s": gpu_px_per_s / pixels if gpu_px_per_s else None,
      "host_images_per_s": host_px_per_s / pixels if host_px_per_s else None,
    },
    "workers": workers,
    "startup_minutes": startup,
    "wall_hours": wall_s / 3600,
    "worker_hours": worker_hours,
    "bytes": {
      "read": read,
      "shuffle": shuffle_bytes,
      "shuffle_per_image": ref_bytes + stitch_bytes,
      "stitched": stitched,
      "written": written,
    },
    "cost_usd": cost,
    "prices": dict(prices, gpu_hour=gpu_price),
    "flags": flags,
    "notes": notes,
    "cpu_workers": cpus,
  }


def _gb(value):
  return f"{value / 1e9:,.1f} GB" if value >= 1e8 else f"{value / 1e6:,.2f} MB"


def render(result: dict) -> str:
  i, w, b, c = result["inputs"], result["per_worker"], result["bytes"], result["cost_usd"]
  worker = f"{i['machine_type']} ({i['vcpus']} vCPU, {i['memory_gb']:g} GB)" + (
    f" + {i['gpu_count']} x {i['gpu_type']}" if i["gpu_type"] else ""
  )
  lines = [
    "deconvseg capacity plan -- an ESTIMATE from measured per-pixel costs and list prices, not a quote",
    f"  workload     {i['images']:,} images of {i['width']}x{i['height']} ({i['format']}), model {i['model']}"
    + (", with overlays" if i["overlays"] else ""),
    f"  worker       {worker}",
    f"  per worker   {w['images_per_s']:.2f} images/s, limited by the {w['limited_by']}"
    + (
      f" (GPU alone {w['gpu_images_per_s']:.1f}, host CPUs alone {w['host_images_per_s']:.1f} images/s)"
      if w["gpu_images_per_s"]
      else ""
    ),
    f"  workers      {result['workers']} to finish within {i['window_hours']:g} h "
    f"(start-up {result['startup_minutes']:g} min)",
    f"  wall time    {result['wall_hours']:.2f} h; {result['worker_hours']:.1f} worker-hours",
    f"  read         {_gb(b['read'])}",
    f"  shuffle      {_gb(b['shuffle'])} ({b['shuffle_per_image']:,.0f} bytes per image"
    + ("; multi-tile images cross the stitch shuffle" if b["stitched"] else "")
    + ")",
    f"  written      {_gb(b['written'])} (masks, statistics" + (", overlays" if i["overlays"] else "") + ")",
    "  cost (USD)   "
    + ", ".join(f"{name.replace('_', ' ')} {value:,.2f}" for name, value in c.items() if name != "total" and value),
    f"  total        ${c['total']:,.2f} per night (estimate)",
    "  flags        " + " ".join(result["flags"]),
    f"  sources      CPU model cost: {result['sources']['cpu_model_cost']}; "
    f"{result['sources']['model_flops_per_pixel']:,.0f} model FLOPs per pixel",
  ]
  if result["sources"]["gpu"]:
    lines.append(f"               GPU rate: {result['sources']['gpu']}")
  lines.append(f"               prices: {result['sources']['prices']}")
  lines += [f"  note         {note}" for note in result["notes"]]
  lines += ["", render_cpu_table(result["cpu_workers"], i["width"], i["height"])]
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(
    prog="python -m bench.plan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--images", type=int, required=True, help="images per night")
  parser.add_argument("--size", default="1024", help="typical image size: SIDE or WIDTHxHEIGHT (default 1024)")
  parser.add_argument("--format", default="png", choices=FORMATS, help="input format (default png)")
  parser.add_argument(
    "--image_bytes",
    type=float,
    default=None,
    help="typical encoded image size in bytes (default: from the format and size)",
  )
  parser.add_argument("--model", default="default", help="'default' (the bundled model) or an exported model directory")
  parser.add_argument("--flops_per_pixel", type=float, default=None, help="skip counting the model's FLOPs")
  parser.add_argument(
    "--machine_type", default=None, help="worker machine type (default n1-standard-4, or the GPU's usual machine)"
  )
  parser.add_argument(
    "--gpu_type", default=None, help="GPU per worker, e.g. nvidia-tesla-t4, nvidia-l4, nvidia-tesla-a100"
  )
  parser.add_argument("--gpu_count", type=int, default=1)
  parser.add_argument("--window_hours", type=float, default=6.0, help="the night's window (default 6 h)")
  parser.add_argument("--max_workers", type=int, default=None, help="cap on workers (quota)")
  parser.add_argument("--overlays", action="store_true", help="the run writes --overlays")
  parser.add_argument(
    "--whole_image_pixels",
    type=int,
    default=4 * 512 * 512,
    help="the pipeline's --whole_image_pixels (larger images are tiled and stitched)",
  )
  parser.add_argument(
    "--gpu_efficiency",
    type=float,
    default=0.10,
    help="share of the GPU's float16 peak the model reaches, when no measurement exists",
  )
  parser.add_argument(
    "--host_cpu_efficiency",
    type=float,
    default=0.6,
    help="share of a GPU worker's vCPUs the single SDK process keeps busy decoding/encoding",
  )
  parser.add_argument("--startup_minutes", type=float, default=None, help="worker start-up (default 5 CPU, 10 GPU)")
  parser.add_argument(
    "--disk_gb", type=float, default=25.0, help="boot disk per worker (default 25 with Dataflow Shuffle)"
  )
  parser.add_argument("--retention_months", type=float, default=1.0, help="how long a night's outputs are kept")
  parser.add_argument("--gpu_hour", type=float, default=None, help="GPU price per hour (default: list price)")
  parser.add_argument(
    "--cpu_rate",
    action="append",
    default=None,
    metavar="FAMILY=IMAGES_PER_VCPU_S",
    help="your measured model rate on a CPU family (images/s per vCPU of the planned images, the engine auto picks "
    "there); replaces the estimate; repeatable",
  )
  for name, value in PRICES.items():
    parser.add_argument(f"--price_{name}", type=float, default=value, help=f"default {value}")
  parser.add_argument("--json", action="store_true", help="print the plan as JSON")
  args = parser.parse_args(argv)
  # Every flag but --json and the prices is plan()'s parameter of the same name (--format is fmt).
  settings = {name: value for name, value in vars(args).items() if name != "json" and not name.startswith("price_")}
  settings["fmt"] = settings.pop("format")
  try:
    result = plan(**settings, prices={name: getattr(args, f"price_{name}") for name in PRICES})
  except PlanError as exc:
    parser.error(str(exc))
  print(json.dumps(result, indent=1) if args.json else render(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
