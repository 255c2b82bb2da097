"""bench.plan: the capacity plan's arithmetic on known inputs, its errors and its labels."""

import json
import os

import pytest

from bench import plan_costs
from bench.plan import PRICES, main, plan
from bench.plan_catalogue import CPU_FAMILIES, FEATURE_CLASSES
from bench.plan_cpu import auto_choice, cpu_table
from model.engines.choice import choose
from model.engines.cpu import CpuFeatures

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
  # n1 is AVX2-only: --engine auto runs OpenVINO fp32, 12.7 images/s of 512^2 on 2 vCPUs (built-in, no bench JSON).
  model_s = 2 / (12.7 * pixels)
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


def _table(**overrides):
  kwargs = dict(prices=PRICES, pixels=512 * 512, bench_json=NO_FILE)
  kwargs.update(overrides)
  return cpu_table(**kwargs)


def test_cpu_table_recommends_the_cheapest_dataflow_family():
  table = _table()
  eligible = [row for row in table["families"] if row["dataflow"] == "yes"]
  cheapest = min(row["usd_per_million_images"] for row in eligible)
  assert table["recommended"]["usd_per_million_images"] == cheapest
  assert table["recommended"]["machine_type"] == f"{table['recommended']['family']}-standard-8"
  for row in table["families"]:
    gb_per_vcpu = {"n1": 3.75, "c4": 3.75, "c4d": 3.875}.get(row["family"], 4)
    per_vcpu_hour = PRICES["vcpu_hour"] + gb_per_vcpu * PRICES["gb_hour"]
    assert row["usd_per_million_images"] == pytest.approx(per_vcpu_hour / (row["images_per_vcpu_s"] * 3600) * 1e6)


@pytest.mark.parametrize("family", sorted(CPU_FAMILIES))
def test_a_familys_engine_is_what_choose_picks_for_its_features(family):
  processor, cls, _ = CPU_FAMILIES[family]
  features = CpuFeatures(processor, frozenset(FEATURE_CLASSES[cls][1]))
  expected = choose("auto", "auto", features=features, gpu=False, has_openvino=True, has_int8=False)
  assert auto_choice(family) == expected
  row = next(row for row in _table()["families"] if row["family"] == family)
  assert row["engine"] == expected.describe()


def test_measured_rates_per_vcpu_and_what_is_not_measured():
  classes = {row["class"]: row["images_per_vcpu_s"] for row in _table()["classes"]}
  assert classes["avx2"]["tensorflow fp32"] == pytest.approx(9.4 / 2)
  assert classes["avx2"]["openvino fp32"] == pytest.approx(12.7 / 2)
  assert classes["avx2"]["openvino bf16"] is None  # no bf16 instructions
  assert classes["amx"]["openvino bf16"] == pytest.approx(62.7 / 2)
  assert classes["amx"]["openvino int8"] is None  # not measured on AMX
  # The image size and the model's FLOPs scale every rate.
  quarter = {row["class"]: row["images_per_vcpu_s"] for row in _table(pixels=1024 * 1024)["classes"]}
  assert quarter["amx"]["openvino bf16"] == pytest.approx(62.7 / 2 / 4)


def test_a_user_rate_overrides_the_estimate_and_the_worker_plan():
  table = _table(user_rates={"n2d": 100.0})
  row = next(row for row in table["families"] if row["family"] == "n2d")
  assert row["images_per_vcpu_s"] == 100.0 and row["basis"] == "--cpu_rate"
  assert table["recommended"]["family"] == "n2d"
  result = _cpu_plan(machine_type="n2d-standard-4", cpu_rate=["n2d=100"])
  assert "--cpu_rate" in result["sources"]["cpu_model_cost"]
  host_s = plan_costs.DECODE_S_PER_PIXEL["png"] + plan_costs.OTHER_S_PER_PIXEL
  assert result["per_worker"]["images_per_s"] == pytest.approx(4 / (1 / (100.0 * 512**2) + host_s) / 512**2)


def test_engine_ceiling_rows_of_the_bench_replace_the_built_in_rates(tmp_path):
  report = tmp_path / "PERFORMANCE.json"
  cpu = {"name": "Intel Xeon Platinum", "flags": ["amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx2"]}
  runs = [
    {
      "mode": "engine_ceiling",
      "model": "default",
      "engine": "openvino",
      "precision": "int8",
      "set": "64 x 512^2",
      "images_per_s": 80.0,
      "threads": 2,
      "cpu": cpu,
    },
    {"mode": "engine_ceiling", "model": "default", "engine": "openvino", "precision": "fp32", "images_per_s": 9.0},
  ]
  report.write_text(json.dumps({"meta": {"cpus": 2}, "runs": runs}))
  classes = {row["class"]: row for row in _table(bench_json=str(report))["classes"]}
  assert classes["amx"]["images_per_vcpu_s"]["openvino int8"] == pytest.approx(40.0)
  assert "Intel Xeon Platinum" in classes["amx"]["basis"]["openvino int8"]
  # A row without its CPU's flags cannot be classed and is left out.
  assert classes["avx2"]["images_per_vcpu_s"]["openvino fp32"] == pytest.approx(12.7 / 2)


def test_cpu_table_is_labelled_estimate_and_rejects_bad_rates(capsys):
  assert main(["--images", "1000", "--size", "512", "--flops_per_pixel", "15053", "--cpu_rate", "c3=20"]) == 0
  out = capsys.readouterr().out
  assert "CPU workers (estimate)" in out and "recommended" in out and "(estimate)" in out.split("recommended")[1]
  with pytest.raises(SystemExit):
    main(["--images", "10", "--flops_per_pixel", "15053", "--cpu_rate", "potato=3"])
  assert "--cpu_rate 'potato=3'" in capsys.readouterr().err
