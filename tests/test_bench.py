"""Smoke test of the benchmark (issue 6): ``run_bench(quick=True)`` end to end, no timing assertions.

Runs every mode on a few 128x128 images (ceiling, in-memory and
multi-processing pipeline, per-image loop, stock RunInference) in fresh
processes, then checks the report's structure and that every mode that writes
masks wrote one per input. The stock mode runs without fetching
tensorflow_hub (the bench's stand-in handler) so the test needs no network.
"""

import json
import os

import pytest

from bench import quality, spy
from bench.findings import steady_state
from bench.report import render_markdown, write_report
from bench.run import run_bench
from transforms.records import MASKS_DIR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  return run_bench(str(tmp_path_factory.mktemp("bench")), quick=True, stock_deps=False)


def test_report_structure(report, tmp_path):
  assert set(report) >= {"meta", "runs", "quality", "steady_state", "profiles", "targets"}
  assert report["meta"]["quick"] is True and len(report["meta"]["load_start"]) == 3
  modes = {run["mode"] for run in report["runs"]}
  assert modes == {"ceiling", "pipeline", "naive", "stock"}
  for run in report["runs"]:
    assert run["images"] > 0 and run["work_s"] > 0 and run["images_per_s"] > 0
    assert run["processes"] and all(p["peak_rss_mb"] > 0 for p in run["processes"])
    assert run["ratio_to_ceiling"] is not None
  multi = next(run for run in report["runs"] if run.get("workers") == 2)
  assert len(multi["processes"]) >= 3  # the pipeline process and its two SDK workers
  out = tmp_path / "PERFORMANCE.md"
  out.write_text("# Performance\n\nintro\n\n<!-- bench:results:begin -->\nold\n<!-- bench:results:end -->\n\ntail\n")
  write_report(report, str(out))
  text = out.read_text()
  assert "intro" in text and "tail" in text and "old" not in text and "| ceiling[default] |" in text
  assert json.loads((tmp_path / "PERFORMANCE.json").read_text())["meta"]["quick"] is True
  assert "Targets:" in render_markdown(report)


def test_every_mode_wrote_one_mask_per_image(report):
  images = next(run["images"] for run in report["runs"] if run["mode"] == "ceiling")
  masks = {run["name"]: run["masks"] for run in report["runs"] if "masks" in run}
  assert len(masks) == 4, masks
  assert set(masks.values()) == {images}, masks
  for row in report["quality"].values():
    assert row["images"] == images and 0 <= row["pixel_agreement"] <= 1


def test_steady_state_fit_and_quality(tmp_path):
  fit = steady_state([{"workers": 1, "images": n, "work_s": 2 + n / 10} for n in (10, 40, 160)])["in-memory"]
  assert fit["fixed_s"] == pytest.approx(2) and fit["steady_images_per_s"] == pytest.approx(10)
  import numpy as np
  from PIL import Image

  for folder, value in (("a", 1), ("b", 2)):
    os.makedirs(tmp_path / folder)
    mask = np.full((4, 4), 1, np.uint8)
    mask[0, :] = value
    Image.fromarray(mask).save(tmp_path / folder / "x.png")
  row = quality.compare(str(tmp_path / "a"), str(tmp_path / "b"))
  assert row["pixel_agreement"] == pytest.approx(0.75) and row["images"] == 1


def test_pyspy_attribution():
  raw = "\n".join(
    [
      "thread (1): MainThread;<module> (pipeline/run.py:139);run (pipeline/run.py:84);validate (pipeline/options.py:360) 50",
      "thread (1): MainThread;run (pipeline/run.py:99);Pipeline.run (apache_beam/pipeline.py:563);"
      "SegmentationModelHandler.run_inference (transforms/inference.py:155);Segmenter.predict (transforms/inference.py:73) 100",
      "thread (1): MainThread;run (pipeline/run.py:99);Pipeline.run (apache_beam/pipeline.py:563);"
      "WriteMasksFn.process (transforms/sinks.py:120);encode_mask (transforms/sinks.py:90) 25",
      "thread (2): Thread-3;something (x.py:1) 500",
    ]
  )
  stages = spy.attribute(raw, 50)
  assert stages == {"model call (TensorFlow)": 2.0, "start-up: imports, options, model check": 1.0, "PNG encoding": 0.5}


def test_pyspy_background_threads():
  raw = "\n".join(
    [
      "thread (5): deconvseg-decode_0;_worker (concurrent/futures/thread.py:83);run (concurrent/futures/thread.py:58);"
      "_decode_ref (transforms/decode.py:181);decode_image (transforms/decode.py:150);quick_execute (x.py:1) 40",
      "thread (5): deconvseg-decode_0;_worker (concurrent/futures/thread.py:81) 60",
      "thread (6): deconvseg-write_0;_worker (concurrent/futures/thread.py:83);WriteMasksFn._work (transforms/sinks.py:146);"
      "encode_mask (transforms/sinks.py:98) 10",
      "thread (6): deconvseg-write_0;_worker (concurrent/futures/thread.py:83);WriteMasksFn._work (transforms/sinks.py:147);"
      "atomic_write (transforms/sinks.py:66) 5",
      "thread (1): MainThread;decode_image (transforms/decode.py:150) 7",
    ]
  )
  assert spy.background(raw, 50) == {
    "decode thread": {"read + decode": 0.8, spy.IDLE: 1.2},
    "write thread": {"PNG encoding": 0.2, "writing (temp file + rename)": 0.1},
  }


def test_baselines_write_the_pipelines_masks_and_counts(tmp_path):
  """The careful loop and the tf.data script produce what the pipeline produces, so their timings compare."""
  import subprocess
  import sys

  import numpy as np
  from PIL import Image

  from bench import modes, workload
  from bench.models import DEFAULT_MODEL
  from tests.pipeline_helpers import read_outputs

  images = workload.make_set(str(tmp_path / "set"), 3, 256)
  outputs = {}
  for mode in ("loop", "tfdata"):
    outputs[mode] = str(tmp_path / mode)
    result = modes.MODES[mode]({"model": DEFAULT_MODEL, "images": images, "output": outputs[mode]})
    assert result["images"] == 3 and result["work_s"] > 0
  pipeline_out = str(tmp_path / "pipeline")
  subprocess.run(
    [sys.executable, "-m", "pipeline.run", "--input", images + "/*.png", "--output", pipeline_out],
    check=True,
    capture_output=True,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  _, records, _ = read_outputs(pipeline_out)
  for mode, folder in outputs.items():
    counts = {json.loads(line)["key"]: json.loads(line)["pixels"] for line in open(os.path.join(folder, "stats.jsonl"))}
    assert counts == {key: [entry["pixels"] for entry in record["classes"]] for key, record in records.items()}, mode
    for key in records:
      with (
        Image.open(os.path.join(folder, key + ".png")) as got,
        Image.open(os.path.join(pipeline_out, MASKS_DIR, key + ".png")) as expected,
      ):
        assert np.array_equal(np.asarray(got).squeeze(), np.asarray(expected)), (mode, key)
