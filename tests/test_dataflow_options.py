"""DataflowGpuOptions: flags -> Beam/Dataflow options, and the combinations refused."""

import pytest
from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions, PipelineOptions, WorkerOptions

import pipeline.options  # noqa: F401  registers the pipeline's --input/--output/--model
from pipeline.cloud.dataflow import (
  DataflowGpuOptions,
  expand_dataflow_options,
  model_handler_kwargs,
  single_process,
  worker_accelerator,
)
from pipeline.cloud.gpu_machines import machine_vcpus

IMAGE = "us-central1-docker.pkg.dev/proj/repo/deconvseg-worker:0.1.0"
DATAFLOW = [
  "--runner=DataflowRunner",
  "--project=proj",
  "--region=us-central1",
  "--temp_location=gs://bucket/tmp",
  "--model=gs://bucket/models/default",
]


def gpu_worker(gpu_type, machine_type):
  """DATAFLOW plus a GPU worker: the accelerator, the machine that carries it and the worker image."""
  return [*DATAFLOW, f"--gpu_type={gpu_type}", f"--machine_type={machine_type}", "--worker_image=" + IMAGE]


def expanded(*flags):
  options = PipelineOptions(list(flags))
  applied = expand_dataflow_options(options)
  return options, applied


def refused(*flags):
  with pytest.raises(ValueError) as raised:
    expand_dataflow_options(PipelineOptions(list(flags)))
  return str(raised.value)


def test_t4_on_n1_expands_to_service_option_image_and_one_process():
  options, applied = expanded(*gpu_worker("nvidia-tesla-t4", "n1-standard-8"))
  cloud = options.view_as(GoogleCloudOptions)
  assert cloud.dataflow_service_options == ["worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"]
  assert options.view_as(WorkerOptions).sdk_container_image == IMAGE
  assert options.view_as(WorkerOptions).machine_type == "n1-standard-8"
  assert "no_use_multiple_sdk_containers" in options.view_as(DebugOptions).experiments
  assert applied == {
    "sdk_container_image": IMAGE,
    "dataflow_service_options": cloud.dataflow_service_options[0],
    "experiments": "no_use_multiple_sdk_containers",
    "number_of_worker_harness_threads": 8,
  }
  assert options.view_as(DebugOptions).number_of_worker_harness_threads == 8
  assert model_handler_kwargs(options) == {}


def test_gpu_harness_threads_follow_the_machine_unless_given(caplog):
  options, _ = expanded(
    *gpu_worker("nvidia-tesla-a100", "a2-highgpu-1g"),
    "--max_num_workers=3",
  )
  assert options.view_as(DebugOptions).number_of_worker_harness_threads == 12
  assert "max_num_workers" not in caplog.text
  options, _ = expanded(
    *gpu_worker("nvidia-tesla-t4", "n1-standard-4"),
    "--number_of_worker_harness_threads=2",
  )
  assert options.view_as(DebugOptions).number_of_worker_harness_threads == 2
  assert "without --max_num_workers" in caplog.text
  # Processes per vCPU (shared model copies): Dataflow's own threading is left alone.
  options, _ = expanded(
    *gpu_worker("nvidia-l4", "g2-standard-8"),
    "--model_copies_per_worker=1",
  )
  assert options.view_as(DebugOptions).number_of_worker_harness_threads is None
  assert machine_vcpus("g2-standard-16") == 16 and machine_vcpus("custom-thing") is None


def test_l4_with_shared_model_copies_keeps_processes_per_vcpu():
  options, _ = expanded(
    *gpu_worker("nvidia-l4", "g2-standard-8"),
    "--model_copies_per_worker=2",
    "--no_install_gpu_driver",
    "--dataflow_service_options=enable_prime",
  )
  assert options.view_as(GoogleCloudOptions).dataflow_service_options == [
    "enable_prime",
    "worker_accelerator=type:nvidia-l4;count:1",
  ]
  assert "no_use_multiple_sdk_containers" not in (options.view_as(DebugOptions).experiments or [])
  assert not single_process(options)
  assert model_handler_kwargs(options) == {"model_copies": 2}


def test_boolean_flags_take_flex_template_style_values():
  options = PipelineOptions(["--install_gpu_driver=false", "--one_process_per_gpu=true"])
  gpu = options.view_as(DataflowGpuOptions)
  assert gpu.install_gpu_driver is False and gpu.one_process_per_gpu is True
  gpu = PipelineOptions(["--one_process_per_gpu"]).view_as(DataflowGpuOptions)
  assert gpu.one_process_per_gpu is True and gpu.install_gpu_driver is True
  assert worker_accelerator("nvidia-tesla-t4", 2, False) == "worker_accelerator=type:nvidia-tesla-t4;count:2"


def test_cpu_dataflow_run_only_gets_the_image_and_local_runs_pass_through():
  options, applied = expanded(*DATAFLOW, "--worker_image=" + IMAGE)
  assert applied == {"sdk_container_image": IMAGE}
  assert options.view_as(GoogleCloudOptions).dataflow_service_options is None
  options, applied = expanded("--runner=FnApiRunner", "--date=2024-01-01")
  assert applied == {}


def test_gpu_flags_need_the_dataflow_runner():
  message = refused("--runner=FnApiRunner", "--gpu_type=nvidia-tesla-t4")
  assert "--gpu_type only apply to Dataflow workers" in message and "--runner=DataflowRunner" in message
  assert "--worker_image" in refused("--worker_image=" + IMAGE)


def test_dataflow_needs_gcs_temp_location():
  message = refused("--runner=DataflowRunner", "--project=p", "--temp_location=/tmp/x", "--model=gs://b/m")
  assert "--temp_location=gs://BUCKET/tmp" in message and "/tmp/x" in message
  assert "--staging_location must be on Cloud Storage" in refused(*DATAFLOW, "--staging_location=/tmp/s")


def test_l4_needs_a_g2_machine():
  message = refused(*gpu_worker("nvidia-l4", "n1-standard-8"))
  assert "--machine_type=n1-standard-8 cannot take nvidia-l4" in message
  assert "g2-*" in message and "--machine_type=g2-standard-8" in message
  assert "pass --machine_type, e.g. --machine_type=g2-standard-8" in refused(
    *DATAFLOW, "--gpu_type=nvidia-l4", "--worker_image=" + IMAGE
  )
  assert "cannot take nvidia-tesla-t4" in refused(*gpu_worker("nvidia-tesla-t4", "g2-standard-8"))


def test_gpu_count_must_fit_the_machine():
  assert "comes with 2 nvidia-l4 GPU(s); set --gpu_count=2" in refused(*gpu_worker("nvidia-l4", "g2-standard-24"))
  assert "comes with 4 nvidia-tesla-a100" in refused(
    *DATAFLOW,
    "--gpu_type=nvidia-tesla-a100",
    "--machine_type=a2-highgpu-4g",
    "--gpu_count=1",
    "--worker_image=" + IMAGE,
  )
  assert "an N1 VM takes 1, 2, 4 nvidia-tesla-t4" in refused(
    *DATAFLOW,
    "--gpu_type=nvidia-tesla-t4",
    "--gpu_count=3",
    "--machine_type=n1-standard-16",
    "--worker_image=" + IMAGE,
    "--model_copies_per_worker=3",
  )
  assert "--gpu_count=2 needs --gpu_type" in refused(*DATAFLOW, "--gpu_count=2")


def test_gpu_needs_the_cuda_worker_image_and_consistent_images():
  assert "needs the CUDA worker image" in refused(
    *DATAFLOW, "--gpu_type=nvidia-tesla-t4", "--machine_type=n1-standard-4"
  )
  assert "disagree" in refused(*DATAFLOW, "--worker_image=" + IMAGE, "--sdk_container_image=other:1")
  options, _ = expanded(*DATAFLOW, "--gpu_type=nvidia-tesla-t4", "--sdk_container_image=" + IMAGE)
  assert options.view_as(WorkerOptions).sdk_container_image == IMAGE


def test_process_modes_exclude_each_other():
  base = gpu_worker("nvidia-tesla-t4", "n1-standard-8")
  assert "exclude each other" in refused(*base, "--one_process_per_gpu", "--model_copies_per_worker=2")
  assert "a single process drives only the first GPU" in refused(*base, "--gpu_count=2", "--one_process_per_gpu=true")
  assert "leaves only one" in refused(
    *base, "--model_copies_per_worker=2", "--experiments=no_use_multiple_sdk_containers"
  )
  assert "must be at least 1" in refused(*base, "--model_copies_per_worker=0")
  options, _ = expanded(*base, "--one_process_per_gpu=false")
  assert "no_use_multiple_sdk_containers" not in (options.view_as(DebugOptions).experiments or [])


def test_accelerator_set_twice_is_refused():
  base = gpu_worker("nvidia-tesla-t4", "n1-standard-8")
  assert "both set the GPUs" in refused(
    *base, "--dataflow_service_options=worker_accelerator=type:nvidia-tesla-t4;count:1"
  )
  assert "do not also pass an accelerator --resource_hints" in refused(
    *base, "--resource_hints=accelerator=type:nvidia-tesla-t4;count:1"
  )


def test_all_problems_are_reported_together():
  message = refused(
    "--runner=DataflowRunner", "--gpu_type=nvidia-l4", "--machine_type=n1-standard-4", "--model=gs://b/m"
  )
  assert message.count("\n  - ") == 3  # temp_location, worker image, machine type


def test_template_builds_may_leave_the_machine_type_to_launch_time():
  options, applied = expanded(
    *DATAFLOW, "--gpu_type=nvidia-l4", "--worker_image=" + IMAGE, "--template_location=gs://bucket/templates/job.json"
  )
  assert applied["dataflow_service_options"] == "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"


def test_dataflow_paths_must_be_on_cloud_storage(monkeypatch):
  message = refused(
    *DATAFLOW, "--input", "/data/in/*.png", "gs://b/in/*.png", "--output=/data/out", "--manifest=lists/a.txt"
  )
  assert "use gs:// paths for --input /data/in/*.png, --manifest lists/a.txt, --output /data/out" in message
  assert "gs://b/in" not in message
  base = [a for a in DATAFLOW if not a.startswith("--model")] + ["--worker_image=" + IMAGE]
  message = refused(*base, "--model=/work/model/default")
  assert "--model /work/model/default is on this machine" in message
  assert "gcloud storage cp -r /work/model/default gs://BUCKET/models/" in message
  # The Flex Template launcher runs in the worker image: the bundled model is there too.
  monkeypatch.setenv("DECONVSEG_WORKER_IMAGE", IMAGE)
  expanded(*base, "--model=/usr/local/lib/python3.11/site-packages/model/default")
  assert "is on this machine" in refused(*base[:-1], "--worker_image=other:2", "--model=/m")
