"""Dataflow GPU workers: a few readable flags expanded into Beam's Dataflow options.

Why ``worker_accelerator`` and not an ``accelerator`` resource hint
--------------------------------------------------------------------
Dataflow offers two ways to attach GPUs. A resource hint on the inference step
("right fitting") gives that step its own worker pool; everything before and
after it runs elsewhere, so Dataflow must break fusion there and ship every
decoded image tile between pools through shuffle. For this pipeline that
traffic is the largest data in the job (decoded uint8 pixels are 10-50x the
compressed inputs), right fitting rules out FlexRS, and the whole worker pool
needs the CUDA container anyway. So the accelerator is a pipeline-wide
``--dataflow_service_options=worker_accelerator=type:T;count:N;install-nvidia-driver``:
read, decode, tile, infer, stitch and write stay fused on the GPU VMs, and the
CPU-side steps overlap with inference on the same machine. (Google's docs say
not to mix the two, so a hint in ``--resource_hints`` is refused.)

Processes per worker
--------------------
Dataflow starts one SDK process per vCPU, and each process would load its own
copy of the model into the GPU's memory. Two remedies, mutually exclusive:

* ``--one_process_per_gpu`` (default with one GPU): the
  ``no_use_multiple_sdk_containers`` experiment, one SDK process per VM whose
  threads share one model (RunInference keeps one model per process).
* ``--model_copies_per_worker=N``: keep a process per vCPU for decoding and
  tiling, and have RunInference load exactly N models per VM, shared by all
  processes (``ModelHandler(model_copies=N)``, see :func:`model_handler_kwargs`).

Threads and workers (sized by ``python -m bench.plan``)
-------------------------------------------------------
With one SDK process per GPU VM, the process's harness threads are what run
bundles side by side: the GPU is shared by all of them, and decoding and mask
encoding (which release the GIL) spread over the VM's vCPUs. A GPU worker is
limited by those CPUs long before the GPU for the bundled model (the plan
estimates 73 images/s of 1024x1024 PNGs for 8 vCPUs against ~400 for a T4),
so unless ``--number_of_worker_harness_threads`` is given it is set to the
machine type's vCPU count: every vCPU has a bundle to decode for, and the
in-flight images stay bounded (each thread holds at most about four batches:
two decoded ahead, one in the model, one being written).
``--max_num_workers`` is left to the caller, but a GPU job without it logs a
warning: the batch autoscaler would otherwise grow towards its own limit,
paying for GPUs the night's window does not need; ``python -m bench.plan``
prints the number for a given window.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional

from apache_beam.options.pipeline_options import (
  DebugOptions,
  GoogleCloudOptions,
  PipelineOptions,
  StandardOptions,
  WorkerOptions,
)

from pipeline.gpu_machines import (
  EXAMPLE_MACHINE,
  GPU_MACHINE_PREFIXES,
  GPU_TYPES,
  N1_GPU_COUNTS,
  gpu_count_for,
  machine_vcpus,
)

_LOG = logging.getLogger(__name__)

SINGLE_PROCESS_EXPERIMENT = "no_use_multiple_sdk_containers"


def parse_bool(value) -> bool:
  """argparse type for flags that take an optional true/false value.

  Flex Templates pass every parameter as ``--name=value``, so booleans must
  accept a value as well as appear bare.
  """
  text = str(value).strip().lower()
  if text in ("true", "1", "yes"):
    return True
  if text in ("false", "0", "no"):
    return False
  raise ValueError(f"expected true or false, got {value!r}")


parse_bool.__name__ = "true/false"  # argparse names the type in its error message


class DataflowGpuOptions(PipelineOptions):
  """GPU workers on Dataflow. Machine type is Beam's own ``--machine_type``."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument(
      "--gpu_type",
      choices=GPU_TYPES,
      default=None,
      help="Attach GPUs of this type to every Dataflow worker (DataflowRunner only), e.g. "
      "nvidia-tesla-t4 (with --machine_type=n1-*) or nvidia-l4 (with --machine_type=g2-*).",
    )
    parser.add_argument(
      "--gpu_count",
      type=int,
      default=1,
      help="GPUs per worker VM (default 1). G2/A2/A3 machine types fix the count; it must match.",
    )
    parser.add_argument(
      "--install_gpu_driver",
      type=parse_bool,
      nargs="?",
      const=True,
      default=True,
      metavar="true|false",
      help="Let Dataflow install the NVIDIA driver on the workers (default true).",
    )
    parser.add_argument(
      "--no_install_gpu_driver",
      dest="install_gpu_driver",
      action="store_false",
      help="Do not install the NVIDIA driver (only for worker images that bring their own).",
    )
    parser.add_argument(
      "--worker_image",
      default=None,
      metavar="IMAGE",
      help="Worker container image (sets --sdk_container_image), e.g. "
      "us-central1-docker.pkg.dev/PROJECT/REPO/deconvseg-worker:0.1.0 built from "
      "deploy/Dockerfile. Required with --gpu_type: it carries CUDA TensorFlow.",
    )
    parser.add_argument(
      "--one_process_per_gpu",
      type=parse_bool,
      nargs="?",
      const=True,
      default=None,
      metavar="true|false",
      help="Run one SDK process per worker VM (experiment no_use_multiple_sdk_containers) so "
      "the model is in GPU memory once. Default: true with one GPU per worker unless "
      "--model_copies_per_worker is given.",
    )
    parser.add_argument(
      "--model_copies_per_worker",
      type=int,
      default=None,
      metavar="N",
      help="Keep one SDK process per vCPU but load exactly N models per worker, shared by "
      "all its processes (RunInference model_copies). Excludes --one_process_per_gpu.",
    )


def _is_dataflow(runner) -> bool:
  name = runner if isinstance(runner, str) else getattr(runner, "__name__", type(runner).__name__)
  return str(name or "").rsplit(".", 1)[-1].lower() in ("dataflowrunner", "dataflow")


# The pipeline's path flags (pipeline.options.SegmentationOptions).
_DATA_PATH_OPTIONS = ("input", "manifest", "tfrecord", "output")


def _local_path_errors(options: PipelineOptions, image: Optional[str]) -> List[str]:
  """Dataflow workers cannot see the launching machine's disk: paths must be on gs://.

  The model is the one exception: a launcher running inside the worker image
  (the Flex Template launcher sets DECONVSEG_WORKER_IMAGE) sees the bundled
  model at the same path the workers will.
  """
  values = options.get_all_options()
  errors = []
  local = []
  for name in _DATA_PATH_OPTIONS:
    value = values.get(name)
    for path in value if isinstance(value, (list, tuple)) else [value]:
      if path and not str(path).startswith("gs://"):
        local.append(f"--{name} {path}")
  if local:
    errors.append(
      "Dataflow workers cannot read or write this machine's files: use gs:// paths for " + ", ".join(local) + "."
    )
  model = values.get("model")
  same_image = image and os.environ.get("DECONVSEG_WORKER_IMAGE") == image
  if model and not str(model).startswith("gs://") and not same_image:
    errors.append(
      f"--model {model} is on this machine, which Dataflow workers cannot read: copy it "
      f"to Cloud Storage (gcloud storage cp -r {model} gs://BUCKET/models/) and pass "
      "--model gs://BUCKET/models/..."
    )
  return errors


def worker_accelerator(gpu_type: str, gpu_count: int, install_driver: bool) -> str:
  """The ``worker_accelerator`` service option value Dataflow expects."""
  value = f"worker_accelerator=type:{gpu_type};count:{gpu_count}"
  return value + (";install-nvidia-driver" if install_driver else "")


def validate_dataflow_options(options: PipelineOptions) -> List[str]:
  """Every problem with the Dataflow/GPU flags, as messages saying how to fix them."""
  gpu = options.view_as(DataflowGpuOptions)
  cloud = options.view_as(GoogleCloudOptions)
  worker = options.view_as(WorkerOptions)
  debug = options.view_as(DebugOptions)
  runner = options.view_as(StandardOptions).runner
  errors = []

  dataflow_only = [
    flag
    for flag, value in (
      ("--gpu_type", gpu.gpu_type),
      ("--worker_image", gpu.worker_image),
      ("--model_copies_per_worker", gpu.model_copies_per_worker),
      ("--one_process_per_gpu", gpu.one_process_per_gpu),
    )
    if value is not None
  ]
  if not _is_dataflow(runner):
    if dataflow_only:
      errors.append(
        f"{', '.join(dataflow_only)} only apply to Dataflow workers: add "
        f"--runner=DataflowRunner (got --runner={runner or 'unset'}). Local runs use "
        "whatever GPU TensorFlow sees."
      )
    return errors

  temp = cloud.temp_location or cloud.staging_location
  if not temp or not str(temp).startswith("gs://"):
    errors.append(
      f"Dataflow needs a Cloud Storage --temp_location, e.g. --temp_location=gs://BUCKET/tmp (got {temp or 'none'})."
    )
  if cloud.staging_location and not str(cloud.staging_location).startswith("gs://"):
    errors.append(f"--staging_location must be on Cloud Storage (gs://...), got {cloud.staging_location}.")

  errors.extend(_local_path_errors(options, gpu.worker_image or worker.sdk_container_image))
  if gpu.worker_image and worker.sdk_container_image and gpu.worker_image != worker.sdk_container_image:
    errors.append(
      f"--worker_image={gpu.worker_image} and --sdk_container_image="
      f"{worker.sdk_container_image} disagree; pass only --worker_image."
    )
  if gpu.model_copies_per_worker is not None and gpu.model_copies_per_worker < 1:
    errors.append(f"--model_copies_per_worker={gpu.model_copies_per_worker} must be at least 1.")
  if gpu.one_process_per_gpu and gpu.model_copies_per_worker is not None:
    errors.append(
      "--one_process_per_gpu and --model_copies_per_worker exclude each other: one "
      "process already holds one model. Pick one."
    )

  if gpu.gpu_type is None:
    if gpu.gpu_count != 1:
      errors.append(f"--gpu_count={gpu.gpu_count} needs --gpu_type (one of {', '.join(GPU_TYPES)}).")
    return errors

  service_options = cloud.dataflow_service_options or []
  if any(str(o).startswith("worker_accelerator") for o in service_options):
    errors.append(
      "--gpu_type and a worker_accelerator in --dataflow_service_options both set the "
      "GPUs; keep only --gpu_type/--gpu_count."
    )
  if any(str(h).startswith("accelerator") for h in (options.view_as(StandardOptions).resource_hints or [])):
    errors.append(
      "--gpu_type attaches GPUs to every worker; do not also pass an accelerator "
      "--resource_hints (Dataflow forbids combining them)."
    )
  if gpu.gpu_count < 1:
    errors.append(f"--gpu_count={gpu.gpu_count} must be at least 1.")
  if not (gpu.worker_image or worker.sdk_container_image):
    errors.append(
      "--gpu_type needs the CUDA worker image: build deploy/Dockerfile and pass "
      "--worker_image=REGION-docker.pkg.dev/PROJECT/REPO/deconvseg-worker:TAG "
      "(Dataflow's default image has CPU-only TensorFlow)."
    )

  machine = worker.machine_type
  prefixes = GPU_MACHINE_PREFIXES[gpu.gpu_type]
  if not machine:
    if prefixes != ("n1-",) and not cloud.template_location:
      # A template gets its machine type at launch (gcloud --worker-machine-type).
      errors.append(
        f"{gpu.gpu_type} only attaches to {'/'.join(p + '*' for p in prefixes)} machines: "
        f"pass --machine_type, e.g. --machine_type={EXAMPLE_MACHINE[gpu.gpu_type]}."
      )
  elif not machine.startswith(prefixes):
    hint = EXAMPLE_MACHINE.get(gpu.gpu_type, "n1-standard-8")
    errors.append(
      f"--machine_type={machine} cannot take {gpu.gpu_type} GPUs: it needs a "
      f"{'/'.join(p + '*' for p in prefixes)} machine, e.g. --machine_type={hint}."
    )
  elif gpu.gpu_count >= 1:
    fixed = gpu_count_for(machine)
    if fixed is not None and fixed != gpu.gpu_count:
      errors.append(
        f"--machine_type={machine} comes with {fixed} {gpu.gpu_type} GPU(s); "
        f"set --gpu_count={fixed} or choose another machine type."
      )
    allowed = N1_GPU_COUNTS.get(gpu.gpu_type)
    if fixed is None and allowed and gpu.gpu_count not in allowed:
      errors.append(f"--gpu_count={gpu.gpu_count}: an N1 VM takes {', '.join(map(str, allowed))} {gpu.gpu_type} GPUs.")

  if gpu.one_process_per_gpu and gpu.gpu_count > 1:
    errors.append(
      f"--one_process_per_gpu with --gpu_count={gpu.gpu_count}: a single process drives "
      "only the first GPU. Use single-GPU workers (scale with --max_num_workers)."
    )
  experiments = debug.experiments or []
  if gpu.model_copies_per_worker is not None and SINGLE_PROCESS_EXPERIMENT in experiments:
    errors.append(
      f"--model_copies_per_worker shares models between processes, but the "
      f"{SINGLE_PROCESS_EXPERIMENT} experiment leaves only one; drop one of them."
    )
  return errors


def expand_dataflow_options(options: PipelineOptions) -> Dict[str, object]:
  """Check the Dataflow/GPU flags and write them into Beam's own options, in place.

  Call after ``PipelineOptions(argv)`` and before building the pipeline. Raises
  ``ValueError`` listing every problem. Returns what was set, for logging.
  Runs on other runners pass through untouched (but GPU flags are refused).
  """
  errors = validate_dataflow_options(options)
  if errors:
    raise ValueError("invalid Dataflow options:\n  - " + "\n  - ".join(errors))
  gpu = options.view_as(DataflowGpuOptions)
  cloud = options.view_as(GoogleCloudOptions)
  worker = options.view_as(WorkerOptions)
  debug = options.view_as(DebugOptions)
  applied: Dict[str, object] = {}
  if not _is_dataflow(options.view_as(StandardOptions).runner):
    return applied

  if gpu.worker_image:
    worker.sdk_container_image = gpu.worker_image
    applied["sdk_container_image"] = gpu.worker_image
  if gpu.gpu_type:
    accelerator = worker_accelerator(gpu.gpu_type, gpu.gpu_count, gpu.install_gpu_driver)
    cloud.dataflow_service_options = list(cloud.dataflow_service_options or []) + [accelerator]
    applied["dataflow_service_options"] = accelerator
    if gpu.gpu_count > 1:
      _LOG.warning(
        "%d GPUs per worker: each SDK process uses the first GPU it sees; single-GPU workers use the hardware fully.",
        gpu.gpu_count,
      )
  if single_process(options):
    experiments = list(debug.experiments or [])
    if SINGLE_PROCESS_EXPERIMENT not in experiments:
      experiments.append(SINGLE_PROCESS_EXPERIMENT)
    debug.experiments = experiments
    applied["experiments"] = SINGLE_PROCESS_EXPERIMENT
    vcpus = machine_vcpus(worker.machine_type)
    if gpu.gpu_type and vcpus and not debug.number_of_worker_harness_threads:
      debug.number_of_worker_harness_threads = vcpus
      applied["number_of_worker_harness_threads"] = vcpus
  if gpu.gpu_type and not worker.max_num_workers:
    _LOG.warning(
      "GPU workers without --max_num_workers: Dataflow's autoscaler may start far more GPU VMs than "
      "the night needs; python -m bench.plan gives the count for a window."
    )
  return applied


def single_process(options: PipelineOptions) -> bool:
  """Whether workers run one SDK process (explicit flag, or the one-GPU default)."""
  gpu = options.view_as(DataflowGpuOptions)
  if gpu.one_process_per_gpu is not None:
    return gpu.one_process_per_gpu
  return gpu.gpu_type is not None and gpu.gpu_count == 1 and gpu.model_copies_per_worker is None


def model_handler_kwargs(options: PipelineOptions) -> Dict[str, int]:
  """Keyword arguments for the RunInference ``ModelHandler`` constructor.

  ``{"model_copies": N}`` with ``--model_copies_per_worker=N`` (RunInference then
  shares N models across the worker's processes), otherwise empty.
  """
  copies = options.view_as(DataflowGpuOptions).model_copies_per_worker
  return {"model_copies": copies} if copies else {}
