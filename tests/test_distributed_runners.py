"""The pipeline on runners whose workers are other processes: Beam's portability framework and Dask.

Each runs the same mixed input set as the in-process FnApiRunner (plain
images of several formats, a 16-bit image, an image big enough to be tiled,
a TFRecord shard and a corrupt file) and must produce the same masks, stats
and failures. The worker pool and the Dask cluster are started here and
stopped, with their child processes, before each test returns.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from pipeline_helpers import REPO, check_accounting, read_outputs

from pipeline.checks import reject_unknown_flags
from pipeline.errors import OptionsError
from transforms.imaging.records import MASKS_DIR, REPORT_FILE

SAMPLES = os.path.join(REPO, "samples")


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  # The worker pool starts SDK workers as plain "python": make that this interpreter.
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  return env


def _run(output, inputs, *flags):
  command = [sys.executable, "-m", "pipeline.run", *inputs, "--output", output, *flags]
  done = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-4000:]
  return done


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  folder = tmp_path_factory.mktemp("mixed")
  for name in os.listdir(os.path.join(SAMPLES, "images")):
    shutil.copy(os.path.join(SAMPLES, "images", name), folder / name)
  (folder / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
  return ["--input", str(folder / "*"), "--tfrecord", os.path.join(SAMPLES, "shards", "*.tfrecord")]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
  output = str(tmp_path_factory.mktemp("reference") / "out")
  _run(output, inputs)
  return output


def _confidence_approx(value):
  """Mean confidences compared to 1e-6: other workers batch tiles and add up sums in another order."""
  if isinstance(value, dict):
    return {
      name: pytest.approx(item, rel=1e-6)
      if name == "mean_confidence" and item is not None
      else _confidence_approx(item)
      for name, item in value.items()
    }
  if isinstance(value, list):
    return [_confidence_approx(item) for item in value]
  return value


def _assert_same_outputs(output, reference):
  summary, records, failures = read_outputs(output)
  ref_summary, ref_records, ref_failures = read_outputs(reference)
  check_accounting(summary, records, failures)
  assert summary["counts"] == ref_summary["counts"]
  assert summary["counts"]["failed"] == 1 and summary["counts"]["segmented"] == 16
  assert summary["classes"] == _confidence_approx(ref_summary["classes"])
  assert sorted(records) == sorted(ref_records)
  for key, record in records.items():
    assert {**record, "mask": None} == _confidence_approx({**ref_records[key], "mask": None}), key
    with (
      Image.open(os.path.join(output, MASKS_DIR, key + ".png")) as got,
      Image.open(os.path.join(reference, MASKS_DIR, key + ".png")) as expected,
    ):
      assert np.array_equal(np.asarray(got), np.asarray(expected)), key
  assert sorted((f["key"], f["stage"], f["message"]) for f in failures) == sorted(
    (f["key"], f["stage"], f["message"]) for f in ref_failures
  )
  # survey_large_0004.jpg (2048 x 1536) is cut into 512-pixel tiles and stitched back.
  assert (records["survey_large_0004.jpg"]["width"], records["survey_large_0004.jpg"]["height"]) == (2048, 1536)
  leftovers = [
    os.path.join(root, name) for root, names, _ in os.walk(output) for name in names if name.startswith("beam-temp")
  ]
  assert not leftovers, leftovers
  assert os.path.exists(os.path.join(output, REPORT_FILE))


def _free_port():
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _stop_group(process):
  """Ends a process started with start_new_session=True and everything it started."""
  try:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=20)
  except (ProcessLookupError, subprocess.TimeoutExpired):
    try:
      os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    process.wait(timeout=20)


@pytest.mark.slow
def test_portable_runner_with_an_external_worker_pool(inputs, reference, tmp_path):
  port = _free_port()
  pool = subprocess.Popen(
    [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
    cwd=REPO,
    env=_env(),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    start_new_session=True,
  )
  try:
    deadline = time.time() + 60
    while time.time() < deadline:
      with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
          break
      assert pool.poll() is None, pool.stderr.read().decode()[-2000:]
      time.sleep(0.2)
    output = str(tmp_path / "out")
    done = _run(
      output,
      inputs,
      "--runner=PortableRunner",
      "--job_endpoint=embed",
      "--environment_type=EXTERNAL",
      f"--environment_config=localhost:{port}",
      "--sdk_worker_parallelism=2",
    )
    assert "Images: 17 read, 16 segmented, 1 failed" in done.stdout
  finally:
    _stop_group(pool)
  _assert_same_outputs(output, reference)


@pytest.mark.slow
def test_dask_cluster_with_two_worker_processes(inputs, reference, tmp_path):
  import distributed

  with distributed.LocalCluster(
    n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env={"PYTHONPATH": REPO}
  ) as cluster:
    output = str(tmp_path / "out")
    done = _run(output, inputs, "--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}")
    assert len(cluster.scheduler.workers) == 2
  assert "Images: 17 read, 16 segmented, 1 failed" in done.stdout
  _assert_same_outputs(output, reference)


def test_the_flag_check_knows_the_named_runners_options():
  reject_unknown_flags(
    [
      "--input",
      "x",
      "--output",
      "y",
      "--runner=DaskRunner",
      "--dask_client_address=tcp://127.0.0.1:8786",
      "--dask_npartitions=4",
    ]
  )
  with pytest.raises(OptionsError, match="unrecognised argument.*--dask_workers=2"):
    reject_unknown_flags(["--input", "x", "--output", "y", "--runner=DaskRunner", "--dask_workers=2"])
  with pytest.raises(OptionsError, match="--runner=NoSuchRunner: Unexpected pipeline runner"):
    reject_unknown_flags(["--input", "x", "--output", "y", "--runner=NoSuchRunner"])
