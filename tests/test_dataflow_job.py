"""The complete Dataflow job description, built offline.

``--template_location=LOCAL.json`` makes Beam's DataflowRunner translate the
real pipeline, build and stage the project sdist (``--setup_file``) and write
the job request it would send, without calling the Dataflow API. Staging goes
to the GCS emulator. Never drop ``--template_location`` here: a real
submission offline hangs in retries for minutes.
"""

import io
import json
import os
import tarfile

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from PIL import Image
from pipeline_helpers import REPO

from pipeline.cloud.dataflow import expand_dataflow_options
from pipeline.schedule import fill_date_templates

IMAGE = "us-central1-docker.pkg.dev/my-project/deconvseg/deconvseg-worker:0.1.0"
ACCELERATOR = "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"


def _object(gcs_emulator, location):
  """Bytes of a staged object named like the job JSON does: storage.googleapis.com/BUCKET/PATH."""
  bucket, _, name = location.split("storage.googleapis.com/", 1)[1].partition("/")
  return gcs_emulator.client().bucket(bucket).blob(name).download_as_bytes()


@pytest.fixture(scope="module")
def job(gcs_emulator, tmp_path_factory):
  """Build the real pipeline's Dataflow job once; returns (job JSON, the bucket)."""
  from pipeline import run as run_module

  bucket = gcs_emulator.create_bucket()
  storage_bucket = gcs_emulator.client().bucket(bucket)
  for day, count in (("2024/05/31", 2), ("2024/06/01", 1)):
    for index in range(count):
      pixels = np.random.default_rng(index).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
      png = io.BytesIO()
      Image.fromarray(pixels).save(png, format="PNG")
      storage_bucket.blob(f"drops/{day}/tile_{index}.png").upload_from_string(png.getvalue())

  # Workers cannot read the launcher's disk, so the model is on Cloud Storage too.
  gcs_emulator.upload_folder(os.path.join(REPO, "model", "default"), f"gs://{bucket}/models/default")
  template = str(tmp_path_factory.mktemp("dataflow") / "job.json")
  argv = [
    "--input",
    f"gs://{bucket}/drops/{{yyyy}}/{{mm}}/{{dd}}/*.png",
    "--output",
    f"gs://{bucket}/masks/date={{date}}",
    "--model",
    f"gs://{bucket}/models/default",
    "--date",
    "2024-05-31",
    "--runner=DataflowRunner",
    "--project=my-project",
    "--region=us-central1",
    "--job_name=deconvseg-{date}",
    f"--temp_location=gs://{bucket}/tmp",
    f"--staging_location=gs://{bucket}/staging",
    f"--template_location={template}",
    f"--setup_file={os.path.join(REPO, 'setup.py')}",
    "--gpu_type=nvidia-tesla-t4",
    "--gpu_count=1",
    "--machine_type=n1-standard-8",
    f"--worker_image={IMAGE}",
    "--max_num_workers=4",
  ]
  # What pipeline.run does with the command line before building the graph.
  argv = fill_date_templates(argv)
  options = PipelineOptions(argv)
  expand_dataflow_options(options)
  run_module.run(argv, save_main_session=False, test_pipeline=beam.Pipeline(options=options))
  with open(template, encoding="utf-8") as handle:
    return json.load(handle), bucket


def test_job_carries_gpu_service_option_image_and_machine(job):
  description, _ = job
  environment = description["environment"]
  assert environment["serviceOptions"] == [ACCELERATOR]
  assert "no_use_multiple_sdk_containers" in environment["experiments"]
  (pool,) = environment["workerPools"]
  assert pool["machineType"] == "n1-standard-8"
  assert pool["workerHarnessContainerImage"] == IMAGE
  assert [c["containerImage"] for c in pool["sdkHarnessContainerImages"]] == [IMAGE]
  assert description["name"] == "deconvseg-2024-05-31"


def test_job_carries_autoscaling_cap_and_harness_threads(job):
  """The capacity plan's settings (README "Run on Dataflow"): a worker cap from bench.plan, one harness thread per vCPU."""
  description, _ = job
  (pool,) = description["environment"]["workerPools"]
  assert pool["autoscalingSettings"]["maxNumWorkers"] == 4
  assert pool["numThreadsPerWorker"] == 8  # n1-standard-8, one SDK process, one model on the GPU
  options = description["environment"]["sdkPipelineOptions"]["options"]
  assert options["number_of_worker_harness_threads"] == 8
  assert options["max_num_workers"] == 4


def test_job_stages_the_project_sdist(job, gcs_emulator):
  description, bucket = job
  (pool,) = description["environment"]["workerPools"]
  packages = {p["name"]: p["location"] for p in pool["packages"]}
  assert "workflow.tar.gz" in packages, sorted(packages)
  assert packages["workflow.tar.gz"].startswith(f"storage.googleapis.com/{bucket}/staging/")
  sdist = tarfile.open(fileobj=io.BytesIO(_object(gcs_emulator, packages["workflow.tar.gz"])))
  names = set(sdist.getnames())
  for member in (
    "setup.py",
    "pipeline/run.py",
    "pipeline/cloud/dataflow.py",
    "pipeline/schedule.py",
    "transforms/inference.py",
    "model/default/card.json",
  ):
    assert "deconvseg-0.1.0/" + member in names, member


def test_job_options_are_the_templated_pipeline_options(job):
  description, bucket = job
  options = description["environment"]["sdkPipelineOptions"]["options"]
  assert options["output"] == f"gs://{bucket}/masks/date=2024-05-31"
  assert options["input"] == [f"gs://{bucket}/drops/2024/05/31/*.png"]
  assert options["date"] == "2024-05-31"
  assert options["model"] == f"gs://{bucket}/models/default"
  assert options["gpu_type"] == "nvidia-tesla-t4"
  assert options["sdk_container_image"] == IMAGE
  assert options["dataflow_service_options"] == [ACCELERATOR]
