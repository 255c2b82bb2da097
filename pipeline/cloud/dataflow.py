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

The combinations refused, and why, are ``pipeline.cloud.dataflow_checks``.
"""

from __future__ import annotations

import logging
from typing import Any

from apache_beam.options.pipeline_options import (
  DebugOptions,
  GoogleCloudOptions,
  PipelineOptions,
  StandardOptions,
  WorkerOptions,
)

from pipeline.cloud import dataflow_checks
from pipeline.cloud.dataflow_checks import SINGLE_PROCESS_EXPERIMENT
from pipeline.cloud.gpu_machines import GPU_TYPES, machine_vcpus

_LOG = logging.getLogger(__name__)


def parse_bool(value: Any) -> bool:
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
  def _add_argparse_args(cls, parser: Any) -> None:
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


def _is_dataflow(runner: Any) -> bool:
  name = runner if isinstance(runner, str) else getattr(runner, "__name__", type(runner).__name__)
  return str(name or "").rsplit(".", 1)[-1].lower() in ("dataflowrunner", "dataflow")


def worker_accelerator(gpu_type: str, gpu_count: int, install_driver: bool) -> str:
  """The ``worker_accelerator`` service option value Dataflow expects."""
  value = f"worker_accelerator=type:{gpu_type};count:{gpu_count}"
  return value + (";install-nvidia-driver" if install_driver else "")


def validate_dataflow_options(options: PipelineOptions) -> list[str]:
  """Every problem with the Dataflow/GPU flags, as messages saying how to fix them."""
  gpu = options.view_as(DataflowGpuOptions)
  cloud = options.view_as(GoogleCloudOptions)
  worker = options.view_as(WorkerOptions)
  runner = options.view_as(StandardOptions).runner
  if not _is_dataflow(runner):
    return dataflow_checks.outside_dataflow_errors(gpu, runner)
  errors = dataflow_checks.location_errors(cloud)
  errors.extend(dataflow_checks.local_path_errors(options, gpu.worker_image or worker.sdk_container_image))
  errors.extend(dataflow_checks.process_errors(gpu, worker))
  if gpu.gpu_type is None:
    if gpu.gpu_count != 1:
      errors.append(f"--gpu_count={gpu.gpu_count} needs --gpu_type (one of {', '.join(GPU_TYPES)}).")
    return errors
  errors.extend(dataflow_checks.accelerator_errors(options, gpu, worker))
  errors.extend(dataflow_checks.machine_errors(gpu, worker, cloud))
  errors.extend(dataflow_checks.single_process_errors(gpu, options.view_as(DebugOptions)))
  return errors


def expand_dataflow_options(options: PipelineOptions) -> dict[str, object]:
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
  applied: dict[str, object] = {}
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


def model_handler_kwargs(options: PipelineOptions) -> dict[str, int]:
  """Keyword arguments for the RunInference ``ModelHandler`` constructor.

  ``{"model_copies": N}`` with ``--model_copies_per_worker=N`` (RunInference then
  shares N models across the worker's processes), otherwise empty.
  """
  copies = options.view_as(DataflowGpuOptions).model_copies_per_worker
  return {"model_copies": copies} if copies else {}
