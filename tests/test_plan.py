"""bench.plan (issue 17): the capacity plan's arithmetic on known inputs, its errors and its labels."""

import json
import os

import pytest

from bench import plan_costs
from bench.plan import PRICES, main, plan

NO_FILE = "/nonexistent/PERFORMANCE.json"


def _cpu_plan(**overrides):
  kwargs = dict(
    images=100_000,
    size="512",
    fmt="png",
    machine_type="n1-standard-4",
    window_hours=2.0,
    flops_per_pixel=plan_costs.DEFAULT_MODEL_FLOPS_PER_PIXEL,
    startup_minutes=0.0,
    bench_json=NO_FILE,
    gpu_json=NO_FILE,
  )
  kwargs.update(overrides)
  return plan(**kwargs)


def test_cpu_arithmetic_from_the_measured_costs():
  result = _cpu_plan()
  pixels = 512 * 512
  # Built-in ceiling (no bench JSON): 30.472 images/s of 512^2 on 2 vCPUs.
  model_s = 2 / (30.472 * pixels)
  host_s = plan_costs.DECODE_S_PER_PIXEL["png"] + plan_costs.OTHER_S_PER_PIXEL
  rate = 4 / (model_s + host_s) / pixels
  assert result["per_worker"]["images_per_s"] == pytest.approx(rate)
  work_s = 100_000 / rate
  workers = -(-work_s // 7200)
  assert result["workers"] == workers
  assert result["wall_hours"] == pytest.approx(work_s / workers / 3600)
  hours = result["worker_hours"]
  assert hours == pytest.approx(workers * work_s / workers / 3600)
  cost = result["cost_usd"]
  assert cost["vcpu"] == pytest.approx(hours * 4 * PRICES["vcpu_hour"])
  assert cost["memory"] == pytest.approx(hours * 15 * PRICES["gb_hour"])
  assert cost["gpu"] == 0
  # File inputs: only a ref per image crosses a shuffle (no image at 512^2 is tiled).
  per_image = 60 + 2 * 20 + plan_costs.REF_OVERHEAD_BYTES
  assert result["bytes"]["shuffle"] == 100_000 * per_image
  assert cost["shuffle"] == pytest.approx(100_000 * per_image / 1e9 * PRICES["shuffle_gb"])
  assert result["bytes"]["written"] == pytest.approx(
    100_000 * (pixels * plan_costs.MASK_BYTES_PER_PIXEL + plan_costs.RECORD_BYTES)
  )
  assert cost["total"] == pytest.approx(sum(v for k, v in cost.items() if k != "total"))


def test_tfrecord_images_and_large_images_cross_the_shuffles():
  tfrecord = _cpu_plan(fmt="tfrecord-png", image_bytes=500_000)
  assert tfrecord["bytes"]["shuffle_per_image"] == 60 + 40 + plan_costs.REF_OVERHEAD_BYTES + 500_000
  large = _cpu_plan(size="2048x1536")
  assert large["bytes"]["stitched"]
  assert large["bytes"]["shuffle_per_image"] == pytest.approx(170 + 2048 * 1536 * plan_costs.STITCH_BYTES_PER_PIXEL)


def test_gpu_estimate_without_measurement_is_labelled():
  result = plan(
    1_000_000,
    "1024",
    gpu_type="nvidia-tesla-t4",
    flops_per_pixel=15000.0,
    gpu_json=NO_FILE,
    bench_json=NO_FILE,
    gpu_efficiency=0.1,
  )
  assert result["inputs"]["machine_type"] == "n1-standard-8"
  assert result["per_worker"]["gpu_images_per_s"] == pytest.approx(65e12 * 0.1 / 15000 / 1024**2)
  assert "ESTIMATE, not measured" in result["sources"]["gpu"]
  assert result["cost_usd"]["gpu"] == pytest.approx(result["worker_hours"] * 0.35)
  assert "--number_of_worker_harness_threads=8" in result["flags"]
  assert f"--max_num_workers={result['workers']}" in result["flags"]


def test_gpu_measurement_file_is_read_defensively(tmp_path):
  measured = tmp_path / "gpu.json"
  measured.write_text(
    json.dumps(
      {
        "device": "NVIDIA H200",
        "runs": [
          {"model": "default", "set": "200 x 512^2", "images_per_s": 2000.0},
          {"model": "fcn8s-vgg16", "set": "8 x 512^2", "images_per_s": 90000.0},
          {"note": "no rate here"},
        ],
      }
    )
  )
  result = plan(
    1000,
    "512",
    gpu_type="nvidia-tesla-t4",
    flops_per_pixel=plan_costs.DEFAULT_MODEL_FLOPS_PER_PIXEL,
    gpu_json=str(measured),
    bench_json=NO_FILE,
  )
  assert result["per_worker"]["gpu_images_per_s"] == pytest.approx(2000.0 * 65 / 989)
  assert "measured model ceiling on NVIDIA H200" in result["sources"]["gpu"]
  measured.write_text("{not json")
  fallback = plan(
    1000, "512", gpu_type="nvidia-tesla-t4", flops_per_pixel=15000.0, gpu_json=str(measured), bench_json=NO_FILE
  )
  assert "ESTIMATE" in fallback["sources"]["gpu"]


def test_output_says_estimate(capsys):
  assert (
    main(["--images", "1000", "--size", "1024", "--machine_type", "n1-standard-8", "--flops_per_pixel", "15053"]) == 0
  )
  out = capsys.readouterr().out
  assert "ESTIMATE" in out and "(estimate)" in out and "--max_num_workers=" in out


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--images", "0"], "at least one image"),
    (["--images", "10", "--size", "big"], "--size 'big'"),
    (["--images", "10", "--machine_type", "potato-9"], "--machine_type 'potato-9'"),
    (["--images", "10", "--gpu_type", "nvidia-gtx-1080"], "--gpu_type 'nvidia-gtx-1080'"),
    (["--images", "10", "--window_hours", "0.1", "--gpu_type", "nvidia-l4"], "shorter than the workers' start-up"),
    (["--images", "10", "--format", "bmp"], "invalid choice"),
    (["--images", "10", "--gpu_type", "nvidia-tesla-v100"], "--gpu_hour"),
  ],
)
def test_bad_flags_give_a_clear_error(capsys, argv, message):
  with pytest.raises(SystemExit) as exit_info:
    main(argv + ["--flops_per_pixel", "15053"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert message in err and "Traceback" not in err


def test_flops_of_the_bundled_model_match_the_recorded_constant():
  """The FLOPs counter on the real SavedModel; a model path goes through it (scaled against this)."""
  assert plan_costs.model_flops_per_pixel(os.path.join(plan_costs.REPO, "model", "default")) == pytest.approx(
    plan_costs.DEFAULT_MODEL_FLOPS_PER_PIXEL, rel=1e-4
  )
