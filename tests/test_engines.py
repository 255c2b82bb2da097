"""The engine choice (flags x CPU features x model) and the OpenVINO engine against TensorFlow.

The feature probe is overridden with ``CpuFeatures`` values, so every branch
of the choice is exercised on any CPU, this AVX2-only one included; what the
machine itself can run (OpenVINO fp32, TensorFlow fp32) is also run for real.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from fake_model import build_fake_model, reference_segment
from pipeline_helpers import REPO, read_outputs, run_pipeline, scene

from model import engines
from model.engines import cpu, openvino_ir
from model.engines.choice import EngineChoice, EngineError, choose
from model.engines.cpu import CpuFeatures, _from_cpuinfo
from transforms.imaging.input_spec import DEFAULT_SPEC

AVX2 = CpuFeatures("AMD EPYC", frozenset({"avx", "avx2"}))
AMX = CpuFeatures("Intel Xeon", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}))


def _choose(engine="auto", precision="auto", features=AVX2, gpu=False, has_openvino=True, has_int8=False, **kw):
  return choose(engine, precision, features=features, gpu=gpu, has_openvino=has_openvino, has_int8=has_int8, **kw)


@pytest.mark.parametrize(
  "kwargs, engine, precision",
  [
    ({}, "openvino", "fp32"),  # no bf16 instructions: auto falls back to fp32
    ({"features": AMX}, "openvino", "bf16"),
    ({"features": AMX, "gpu": True}, "tensorflow", "fp32"),  # GPUs keep the TensorFlow engine
    ({"has_openvino": False}, "tensorflow", "fp32"),
    ({"mixed_precision": True}, "tensorflow", "mixed_float16"),
    ({"engine": "tensorflow", "features": AMX}, "tensorflow", "fp32"),
    ({"precision": "fp32", "features": AMX}, "openvino", "fp32"),
    ({"precision": "int8", "has_int8": True}, "openvino", "int8"),
    ({"features": AMX, "has_int8": True}, "openvino", "bf16"),  # int8 is never picked silently
  ],
)
def test_choice(kwargs, engine, precision):
  choice = _choose(**kwargs)
  assert (choice.engine, choice.precision) == (engine, precision) and choice.reason


@pytest.mark.parametrize(
  "kwargs, words",
  [
    ({"precision": "bf16"}, ["AMX or AVX-512 BF16", "AMD EPYC", "--precision auto or fp32"]),
    ({"precision": "int8"}, ["python -m model.quantize --model"]),
    ({"engine": "tensorflow", "precision": "bf16"}, ["OpenVINO engine only"]),
    ({"engine": "openvino", "has_openvino": False}, ["pip install", "openvino"]),
    ({"engine": "openvino", "mixed_precision": True}, ["--precision bf16"]),
    ({"precision": "int8", "mixed_precision": True}, ["exclude each other"]),
  ],
)
def test_refusals_say_what_to_do(kwargs, words):
  with pytest.raises(EngineError) as error:
    _choose(**kwargs)
  message = str(error.value)
  assert "\n" not in message and all(word in message for word in words), message


def test_cpu_flags_are_read_from_cpuinfo():
  text = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"
  )
  features = _from_cpuinfo(text + text.replace("processor\t: 0", "processor\t: 1"))
  assert features.name == "Intel(R) Xeon(R) Platinum 8481C"
  assert features.bf16 and features.amx and not features.int8
  assert features.describe()["flags"] == ["amx_tile", "amx_bf16", "avx512f", "avx2"]
  assert not _from_cpuinfo("model name : AMD EPYC\nflags : avx avx2\n").bf16


def test_hidden_gpus_are_not_visible(monkeypatch):
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
  assert not cpu.gpu_visible()


def test_openvino_matches_tensorflow_and_the_oracle_on_every_pixel(fake_model):
  images = np.stack([scene(72, 88, seed=seed) for seed in range(3)])
  tf_ids, tf_confidence = engines.load(fake_model, EngineChoice("tensorflow", "fp32"), DEFAULT_SPEC).predict(images)
  segmenter = engines.load(fake_model, EngineChoice("openvino", "fp32"), DEFAULT_SPEC)
  ov_ids, ov_confidence = segmenter.predict(images)
  assert ov_ids.dtype == np.uint8 and ov_confidence.dtype == np.float32
  np.testing.assert_array_equal(ov_ids, tf_ids)
  np.testing.assert_allclose(ov_confidence, tf_confidence, atol=1e-6)
  for image, ids in zip(images, ov_ids):
    np.testing.assert_array_equal(ids, reference_segment(image))
  empty_ids, empty_confidence = segmenter.predict(np.zeros((0, 16, 16, 3), np.uint8))
  assert empty_ids.shape == empty_confidence.shape == (0, 16, 16)
  assert segmenter.declared_classes() == 4  # kept in the IR from the export's num_classes


@pytest.mark.slow
def test_a_model_without_ir_is_converted_once_into_the_cache(fake_model, tmp_path, monkeypatch):
  monkeypatch.setenv("DECONVSEG_CACHE", str(tmp_path / "cache"))
  model = shutil.copytree(fake_model, tmp_path / "model")
  path, source = openvino_ir.locate_ir(str(model))
  assert source == "converted" and path.startswith(str(tmp_path / "cache"))
  assert openvino_ir.locate_ir(str(model)) == (path, "cache")
  # The IR written beside the SavedModel serves once the card records its source hash ...
  openvino_ir.save_ir(openvino_ir.convert_saved_model(str(model)), str(model / "openvino"))
  card = json.loads((model / "card.json").read_text())
  card["openvino"] = {"source_saved_model_sha256": openvino_ir.saved_model_hash(str(model))}
  (model / "card.json").write_text(json.dumps(card))
  assert openvino_ir.locate_ir(str(model)) == (str(model / "openvino" / "model.xml"), "model directory")
  # ... and not once the SavedModel changes under it (a stale IR would segment with old weights).
  shutil.rmtree(model / "saved_model")
  build_fake_model(str(model), dark=100)
  (model / "card.json").write_text(json.dumps(card))
  assert openvino_ir.locate_ir(str(model))[1] == "converted"


def test_the_bundled_model_ships_a_current_ir():
  model_dir = os.path.join(REPO, "model", "default")
  assert openvino_ir.locate_ir(model_dir) == (openvino_ir.ir_path(model_dir), "model directory")
  card = json.loads(open(os.path.join(model_dir, "card.json")).read())
  assert card["openvino"]["agreement"]["agreement"]["openvino fp32"] >= 0.995


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_a_run_records_its_engine_precision_and_cpu(fake_model, tmp_path, precision):
  folder = tmp_path / "in"
  folder.mkdir()
  from PIL import Image

  Image.fromarray(scene(40, 48, seed=1)).save(folder / "a.png")
  run_pipeline(folder / "*", tmp_path / "out", fake_model, f"--precision={precision}")
  summary, records, _ = read_outputs(str(tmp_path / "out"))
  engine = summary["engine"]
  # auto takes bf16 where the CPU has bf16 instructions; an explicit fp32 is kept
  expected = "bf16" if precision == "auto" and cpu.probe().bf16 else "fp32"
  assert (engine["engine"], engine["precision"]) == ("openvino", expected)
  assert engine["requested"] == {"engine": "auto", "precision": precision}
  assert engine["cpu"]["name"] == cpu.probe().name and engine["arithmetic"] in ("f32", "bf16")
  assert summary["options"]["engine"] == "auto" and len(records) == 1
  report = (tmp_path / "out" / "report.html").read_text()
  assert f"openvino {engine['precision']}" in report and cpu.probe().name in report


def test_a_cpu_without_bf16_falls_back_to_fp32_and_one_with_it_runs_bf16(fake_model, tmp_path, monkeypatch):
  from PIL import Image

  folder = tmp_path / "in"
  folder.mkdir()
  Image.fromarray(scene(40, 48, seed=2)).save(folder / "a.png")
  for features, expected in ((AVX2, "fp32"), (AMX, "bf16")):
    monkeypatch.setattr(cpu, "probe", lambda features=features: features)
    output = tmp_path / f"out-{expected}"
    run_pipeline(folder / "*", output, fake_model, "--precision=auto")
    summary, records, _ = read_outputs(str(output))
    assert summary["engine"]["precision"] == expected and summary["engine"]["cpu"]["name"] == features.name
    assert len(records) == 1


def _cli(*args, env=None):
  process = subprocess.run(
    [sys.executable, "-m", "pipeline.run", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    env=dict(os.environ, **(env or {})),
    timeout=300,
  )
  return process.returncode, process.stderr


@pytest.mark.skipif(cpu.probe().bf16, reason="this CPU has bf16 instructions")
def test_bf16_on_a_cpu_without_it_stops_before_any_work(tmp_path):
  code, err = _cli("--input", "samples/images/*.png", "--output", str(tmp_path / "out"), "--precision", "bf16")
  assert code == 2 and err.startswith("deconvseg: error: --precision bf16 needs AMX") and err.count("\n") == 1, err
  assert not (tmp_path / "out" / "masks").exists()


def test_int8_without_an_int8_model_stops_before_any_work(fake_model, tmp_path):
  code, err = _cli(
    "--input", "samples/images/*.png", "--output", str(tmp_path / "out"), "--model", fake_model, "--precision", "int8"
  )
  assert code == 2 and "python -m model.quantize --model" in err and err.count("\n") == 1, err


def test_an_int8_ir_from_another_savedmodel_is_refused(fake_model, tmp_path):
  model = shutil.copytree(fake_model, tmp_path / "model")
  openvino_ir.save_ir(openvino_ir.convert_saved_model(str(model)), str(model / "openvino"), openvino_ir.INT8_FILE)
  assert "not made from its current SavedModel" in openvino_ir.int8_problem(str(model))
  with pytest.raises(EngineError, match="python -m model.quantize"):
    engines.choose_here(str(model), precision="int8")
  card = json.loads((model / "card.json").read_text())
  card["openvino"] = {"int8": {"source_saved_model_sha256": openvino_ir.saved_model_hash(str(model))}}
  (model / "card.json").write_text(json.dumps(card))
  assert openvino_ir.int8_problem(str(model)) is None
  choice = engines.choose_here(str(model), precision="int8")
  assert (choice.engine, choice.precision) == ("openvino", "int8")


def test_a_failed_conversion_leaves_the_root_logger_as_it_was(tmp_path):
  """OpenVINO's converter sets the root logger to ERROR and restores it only on success."""
  import logging

  import openvino

  garbage = tmp_path / "garbage.onnx"
  garbage.write_bytes(b"not a model")
  root = logging.getLogger()
  before = root.level, list(root.handlers)
  with pytest.raises(Exception):  # noqa: B017  (whatever OpenVINO raises; the point is the logger after it)
    openvino_ir.convert_model(openvino, str(garbage))
  assert (root.level, list(root.handlers)) == before
