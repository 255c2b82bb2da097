"""Every problem with the Dataflow/GPU flags, as a message that says how to fix it.

Apart from ``pipeline.cloud.dataflow`` (the flags and their expansion into Beam's
options, with the reasons behind them) because these are the refusals: each
function checks one group of flags, given the option views it reads, and
returns its messages; ``pipeline.cloud.dataflow.validate_dataflow_options`` calls
them in order, so a bad invocation lists every problem at once.
"""

import os
from typing import Any

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from pipeline.cloud.gpu_machines import EXAMPLE_MACHINE, GPU_MACHINE_PREFIXES, N1_GPU_COUNTS, gpu_count_for

# One SDK process per worker VM (--one_process_per_gpu); pipeline.cloud.dataflow adds it to the experiments.
SINGLE_PROCESS_EXPERIMENT = "no_use_multiple_sdk_containers"


def outside_dataflow_errors(gpu: Any, runner: Any) -> list[str]:
  """The Dataflow-only flags given to another runner."""
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
  if not dataflow_only:
    return []
  return [
    f"{', '.join(dataflow_only)} only apply to Dataflow workers: add "
    f"--runner=DataflowRunner (got --runner={runner or 'unset'}). Local runs use "
    "whatever GPU TensorFlow sees."
  ]


def location_errors(cloud: Any) -> list[str]:
  """Dataflow's temp and staging locations must be on Cloud Storage."""
  errors = []
  temp = cloud.temp_location or cloud.staging_location
  if not temp or not str(temp).startswith("gs://"):
    errors.append(
      f"Dataflow needs a Cloud Storage --temp_location, e.g. --temp_location=gs://BUCKET/tmp (got {temp or 'none'})."
    )
  if cloud.staging_location and not str(cloud.staging_location).startswith("gs://"):
    errors.append(f"--staging_location must be on Cloud Storage (gs://...), got {cloud.staging_location}.")
  return errors


def process_errors(gpu: Any, worker: Any) -> list[str]:
  """The worker image named twice, and the two ways of sharing a model that exclude each other."""
  errors = []
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
  return errors


def accelerator_errors(options: PipelineOptions, gpu: Any, worker: Any) -> list[str]:
  """--gpu_type with another way of attaching GPUs, a count below one, or no CUDA worker image."""
  errors = []
  service_options = options.view_as(GoogleCloudOptions).dataflow_service_options or []
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
  return errors


def machine_errors(gpu: Any, worker: Any, cloud: Any) -> list[str]:
  """A machine type the GPU type cannot attach to, or whose fixed GPU count --gpu_count contradicts."""
  errors = []
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
  return errors


def single_process_errors(gpu: Any, debug: Any) -> list[str]:
  """One SDK process per VM with several GPUs, or with shared model copies."""
  errors = []
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


# The pipeline's path flags (pipeline.options.SegmentationOptions).
_DATA_PATH_OPTIONS = ("input", "manifest", "tfrecord", "output")


def local_path_errors(options: PipelineOptions, image: str | None) -> list[str]:
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
