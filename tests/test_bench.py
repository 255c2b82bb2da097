"""Smoke test of the benchmark (``python -m bench``): ``run_bench(quick=True)`` end to end, no timing assertions.

Runs every mode on a few 128x128 images (ceiling, in-memory and
multi-processing pipeline, per-image loop, stock RunInference, the CPU
engines alone, the end-to-end comparison on JPEGs) in fresh processes, then
checks the report's structure and that every mode that writes masks wrote
one per input. The stock mode runs without fetching tensorflow_hub (the
bench's stand-in handler) so the test needs no network.
"""

import json
import os

import pytest
from pipeline_helpers import REPO

from bench import quality, spy
from bench.findings import engine_targets, steady_state
from bench.report import render_markdown, write_report
from bench.run import run_bench
from transforms.imaging.records import MASKS_DIR


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  return run_bench(str(tmp_path_factory.mktemp("bench")), quick=True, stock_deps=False)


@pytest.mark.slow
def test_report_structure(report, tmp_path):
  assert set(report) >= {"meta", "runs", "quality", "steady_state", "profiles", "targets"}
  assert report["meta"]["quick"] is True and len(report["meta"]["load_start"]) == 3
  modes = {run["mode"] for run in report["runs"]}
  assert modes == {"ceiling", "pipeline", "naive", "stock", "engine_ceiling", "e2e", "short"}
  for run in report["runs"]:
    assert run["images"] > 0 and run["work_s"] > 0 and run["images_per_s"] > 0
    assert run["processes"] and all(p["peak_rss_mb"] > 0 for p in run["processes"])
    assert (run["ratio_to_ceiling"] is not None) == (run["mode"] in ("ceiling", "pipeline", "naive", "stock"))
  engines = {(row["engine"], row["precision"]): row for row in report["engines"]}
  assert engines[("tensorflow", "fp32")]["status"] == "measured"
  assert engines[("openvino", "fp32")]["status"] == "measured"
  assert engines[("openvino", "fp32")]["tensorflow_imported"] is False
  for row in engines.values():
    assert row["status"] in ("measured", "skipped", "failed")
    assert (row["status"] == "measured") == ("batch_images_per_s" in row), row
    assert row["status"] == "measured" or row["reason"], row
  (end_to_end,) = report["end_to_end"]
  assert set(end_to_end["wall_ratio"]) == {"TF loop", "tf.data", "OpenVINO loop"}
  multi = next(run for run in report["runs"] if run.get("workers") == 2)
  assert len(multi["processes"]) >= 3  # the pipeline process and its two SDK workers
  out = tmp_path / "PERFORMANCE.md"
  out.write_text("# Performance\n\nintro\n\n<!-- bench:results:begin -->\nold\n<!-- bench:results:end -->\n\ntail\n")
  write_report(report, str(out))
  text = out.read_text()
  assert "intro" in text and "tail" in text and "old" not in text and "| ceiling[default] |" in text
  assert json.loads((tmp_path / "PERFORMANCE.json").read_text())["meta"]["quick"] is True
  markdown = render_markdown(report)
  from model.engines import cpu

  automatic = "bf16" if cpu.probe().bf16 else "fp32"  # what --precision auto picks on this CPU
  assert "Targets:" in markdown and f"| openvino | {automatic} (auto) |" in markdown
  assert "pipeline vs OpenVINO loop" in markdown


@pytest.mark.slow
def test_every_mode_wrote_one_mask_per_image(report):
  images = next(run["images"] for run in report["runs"] if run["mode"] == "ceiling")
  masks = {run["name"]: (run["masks"], run["images"]) for run in report["runs"] if "masks" in run}
  assert len(masks) == 4 + 4 + 1, masks  # main set; the pipeline and three programs end to end; the short run
  assert all(written == count for written, count in masks.values()), masks
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
      "SegmentationModelHandler.run_inference (transforms/inference.py:155);"
      "OpenVinoSegmenter.segment_with_stats (model/engines/openvino_engine.py:140);"
      "OpenVinoSegmenter.predict (model/engines/openvino_engine.py:128) 100",
      "thread (1): MainThread;run (pipeline/run.py:99);Pipeline.run (apache_beam/pipeline.py:563);"
      "OpenVinoSegmenter.segment_with_stats (model/engines/openvino_engine.py:140);"
      "per_class_sums (model/engines/openvino_engine.py:160) 10",
      "thread (1): MainThread;run (pipeline/run.py:99);Pipeline.run (apache_beam/pipeline.py:563);"
      "WriteMasksFn.process (transforms/sinks.py:120);encode_mask (transforms/sinks.py:90) 25",
      "thread (2): Thread-3;something (x.py:1) 500",
    ]
  )
  stages = spy.attribute(raw, 50)
  assert stages == {
    "model call (engine)": 2.0,
    "per-class reductions (numpy)": 0.2,
    "start-up: imports, options, model check": 1.0,
    "PNG encoding": 0.5,
  }


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


@pytest.mark.slow
def test_baselines_write_the_pipelines_masks_and_counts(tmp_path):
  """The careful loop and the tf.data script produce what the pipeline produces, so their timings compare."""
  import subprocess
  import sys

  import numpy as np
  from PIL import Image
  from pipeline_helpers import read_outputs

  from bench import modes, workload
  from bench.models import DEFAULT_MODEL

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
    cwd=REPO,
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


def test_engine_targets_from_made_up_records():
  """Each target is judged from the numbers; a row that could not run leaves its target unjudged, with the reason."""
  engines = [
    {"engine": "tensorflow", "precision": "fp32", "status": "measured", "batch_images_per_s": {"8": 10.0, "16": 10.0}},
    {"engine": "openvino", "precision": "fp32", "status": "measured", "batch_images_per_s": {"8": 20.0, "16": 21.0}},
    {"engine": "openvino", "precision": "int8", "status": "skipped", "reason": "no int8 IR"},
  ]
  pipeline = {"images": 1000, "work_s": 40.0, "wall_s": 50.0}
  report = {
    "meta": {"openvino_auto_precision": "fp32"},
    "runs": [{"name": "short", "images": 8, "wall_s": 4.2, "mode": "short", "detail": {}}],
    "short_run": "short",
    "engines": engines,
    "steady_state": {"in-memory": {"steady_images_per_s": 18.0}},
    "end_to_end": [
      {"images": 160, "pipeline": dict(pipeline, images=160), "wall_ratio": {"TF loop": 1.4}},
      {"images": 1000, "pipeline": pipeline, "wall_ratio": {"TF loop": 2.0, "tf.data": 1.5, "OpenVINO loop": 1.1}},
    ],
  }
  found = engine_targets(report)
  assert found["model alone: OpenVINO auto (fp32) >= 2.0 x TensorFlow fp32, batch 16"] == {"value": 2.1, "met": True}
  int8 = found["model alone: OpenVINO int8 >= 2.5 x TensorFlow fp32, batch 16 (stretch)"]
  assert int8["met"] is None and "no int8 IR" in int8["note"]
  assert found["pipeline >= 1.8 x TF loop, 1,000 JPEGs (wall, process start included)"]["met"] is True
  assert found["pipeline >= 1.6 x tf.data, 1,000 JPEGs (wall, process start included)"]["met"] is False
  assert found["pipeline >= 1.0 x OpenVINO loop, 1,000 JPEGs (wall, process start included)"]["met"] is True
  assert found["pipeline >= 1.5 x TF loop, 160 JPEGs (wall, process start included)"]["met"] is False
  steady = found["steady-state pipeline >= 0.85 x its engine's ceiling (openvino fp32, batch 8)"]
  assert steady["value"] == 0.9 and steady["met"] is True
  assert found["8-image run of the bundled model < 5 s wall (process start included)"]["met"] is True


@pytest.mark.slow
def test_engine_modes_match_the_pipeline_engine(tmp_path):
  """openvino_loop writes the pipeline engine's masks and counts; engine_ceiling counts its images and agrees with TF."""
  import subprocess
  import sys

  import numpy as np
  from PIL import Image

  from bench import workload
  from bench.models import DEFAULT_MODEL
  from bench.procs import child_env
  from model import engines
  from model.engines.choice import EngineChoice
  from model.engines.openvino_ir import ir_path
  from transforms.imaging.input_spec import InputSpec

  images = workload.make_set(str(tmp_path / "set"), 4, 64, pool_size=2, tile=64)
  names = sorted(os.listdir(images))
  arrays = [np.asarray(Image.open(os.path.join(images, name)).convert("RGB")) for name in names]
  spec = InputSpec.from_card(json.loads(open(os.path.join(DEFAULT_MODEL, "card.json")).read()))
  reference = str(tmp_path / "reference.npz")
  tensorflow = engines.load(DEFAULT_MODEL, EngineChoice("tensorflow", "fp32"), spec)
  np.savez(reference, names=np.array(names), class_ids=tensorflow.predict(np.stack(arrays))[0])

  def mode(name, args):
    done = subprocess.run(
      [sys.executable, "-m", "bench.modes", name, json.dumps(args)],
      capture_output=True,
      text=True,
      env=child_env(),
      cwd=REPO,
      timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])

  output = str(tmp_path / "loop")
  # fp32 on both sides: bf16 (the default where the CPU has it) differs between graph configurations
  loop_args = {"model": DEFAULT_MODEL, "images": images, "ir": ir_path(DEFAULT_MODEL), "output": output}
  looped = mode("openvino_loop", dict(loop_args, inference_precision="f32"))
  assert looped["images"] == 4 and looped["work_s"] > 0 and looped["execution_precision"] == "f32"
  segmenter = engines.load(DEFAULT_MODEL, engines.choose_here(DEFAULT_MODEL, precision="fp32"), spec)
  counts = {json.loads(line)["key"]: json.loads(line)["pixels"] for line in open(os.path.join(output, "stats.jsonl"))}
  for name, array in zip(names, arrays):
    expected = segmenter.predict(array[None])[0][0]
    with Image.open(os.path.join(output, name + ".png")) as mask:
      assert mask.mode == "P" and np.array_equal(np.asarray(mask), expected), name
    assert counts[name] == np.bincount(expected.ravel(), minlength=5).tolist()

  args = {"model": DEFAULT_MODEL, "images": images, "engine": "openvino", "precision": "fp32", "count": 4}
  ceiling = mode("engine_ceiling", dict(args, batch_sizes=[1, 2], reference=reference))
  assert ceiling["images"] == 4 and set(ceiling["batch_images_per_s"]) == {"1", "2"}
  assert ceiling["tensorflow_imported"] is False
  assert 0.99 <= ceiling["agreement"] <= 1, ceiling
