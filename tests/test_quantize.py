"""model.quantize: int8 IR behind an accuracy gate, on a tiny FCN trained a few steps on a colour rule.

The model is exported the way ``model.export`` does it (SavedModel, card,
fp32 IR); calibration images are PNG files of different sizes and the
held-out truth is a folder dataset whose masks follow the same rule.
"""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image
from pipeline_helpers import REPO

from model import engines
from model.artifact import quantize as quantize_module
from model.artifact.export import SegmentationModule, build_card, save_module, write_card
from model.engines import card_input, openvino_ir
from model.engines.choice import EngineChoice
from model.network.fcn import build_fcn

CLASSES = [{"id": 0, "name": "red"}, {"id": 1, "name": "green"}, {"id": 2, "name": "blue"}]

# Every test uses the module fixture that trains and exports a model.
pytestmark = pytest.mark.slow


def _scene(rng, height, width):
  """Rectangles, each dominated by one of R, G, B over a noisy background; the label is that channel."""
  image = rng.integers(40, 90, (height, width, 3)).astype(np.uint8)
  for _ in range(4):
    top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
    bottom, right = top + rng.integers(8, height), left + rng.integers(8, width)
    image[top:bottom, left:right, rng.integers(0, 3)] = rng.integers(150, 255)
  return image, image.argmax(-1).astype(np.uint8)


def _write_png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _write_fp32_ir(module, model_dir, card):
  """What ``model.export_openvino.write_ir`` writes, converted from the in-memory function (twice as fast)."""
  import openvino

  converted = openvino_ir.convert_function(openvino, module.segment.get_concrete_function())
  openvino_ir.save_ir(converted, os.path.join(model_dir, openvino_ir.IR_FOLDER))
  card["openvino"] = {"ir": "openvino/model.xml", "source_saved_model_sha256": openvino_ir.saved_model_hash(model_dir)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(model directory, calibration glob, truth dataset, the exported tf.Module) for the tiny FCN."""
  root = tmp_path_factory.mktemp("quantize")
  rng = np.random.default_rng(0)
  images, labels = zip(*(_scene(rng, 32, 32) for _ in range(12)))
  keras.utils.set_random_seed(0)
  model = build_fcn(num_classes=3, variant="fcn8s", encoder="compact", width=8)
  # Three eager steps: tracing a training graph would cost more than the steps themselves.
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, run_eagerly=True)
  model.fit(np.stack(images).astype(np.float32), np.stack(labels), batch_size=4, epochs=1, verbose=0)
  model_dir = str(root / "model")
  module = SegmentationModule(model)
  save_module(module, model_dir)
  card = build_card(model, {"classes": CLASSES}, "tiny-fcn", "0.0.1")
  _write_fp32_ir(module, model_dir, card)
  write_card(model_dir, card)
  for index, (height, width) in enumerate([(32, 32), (40, 24), (48, 56), (32, 64), (24, 40), (56, 48)]):
    _write_png(str(root / "calibration" / f"{index}.png"), _scene(rng, height, width)[0])
  for index in range(4):
    image, mask = _scene(rng, 40, 40)
    _write_png(str(root / "truth" / "test" / "images" / f"{index}.png"), image)
    _write_png(str(root / "truth" / "test" / "masks" / f"{index}.png"), mask)
  return model_dir, str(root / "calibration" / "*.png"), str(root / "truth"), module


def _copy(model_dir, tmp_path):
  copy = str(tmp_path / "model")
  shutil.copytree(model_dir, copy)
  return copy


def _run(capsys, *argv):
  status = quantize_module.main(list(argv))
  captured = capsys.readouterr()
  return status, captured.out, captured.err


def test_passing_gate_writes_int8_ir_and_card_block_that_the_engine_loads(exported, tmp_path, capsys):
  model_dir, calibration, truth, module = exported
  model_dir = _copy(model_dir, tmp_path)
  status, out, err = _run(
    capsys,
    *("--model", model_dir, "--calibration", calibration, "--truth_data", truth, "--truth_split", "test"),
    *("--agreement_min", "0", "--miou_drop_max", "1", "--speed_seconds", "0.05", "--speed_size", "48"),
  )
  assert status == 0, err
  summary = json.loads(out.strip().splitlines()[-1])
  xml = os.path.join(model_dir, "openvino", "model_int8.xml")
  assert os.path.exists(xml) and os.path.exists(xml[:-4] + ".bin")
  with open(xml, encoding="utf-8") as handle:
    assert 'type="FakeQuantize"' in handle.read()  # quantised, not a copy of fp32
  with open(os.path.join(model_dir, "card.json"), encoding="utf-8") as handle:
    card = json.load(handle)
  block = card["openvino"]["int8"]
  assert card["openvino"]["ir"] == "openvino/model.xml"  # the fp32 block is kept
  assert block["ir"] == "openvino/model_int8.xml" and summary["ir"] == block["ir"]
  assert block["calibration"]["images"] == 6 and calibration in block["calibration"]["command"]
  assert block["gate"]["passed"] and block["gate"]["status"] == "passed"
  assert set(block["gate"]["checks"]) == {"agreement", "mean_iou"}
  assert block["evaluation"]["held_out"] and block["evaluation"]["images"] == 4
  assert set(block["mean_iou"]) >= {"fp32", "int8"} and block["agreement_openvino_fp32"] >= 0.999
  assert set(block["speed"]["images_per_s"]) == {"fp32", "int8"} and block["speed"]["size"] == 48
  assert block["nncf"] and block["openvino"] and block["created"]
  assert "OpenVINO int8" in out and "gate passed" in out

  # The pipeline's engine runs the written IR; its agreement with TensorFlow fp32 is what the card says.
  assert engines.choose_here(model_dir, "openvino", "int8").precision == "int8"
  spec = card_input(card)
  int8 = engines.load(model_dir, EngineChoice("openvino", "int8"), spec)
  assert int8.describe()["ir"] == xml
  same = pixels = 0
  for name in sorted(os.listdir(os.path.join(truth, "test", "images"))):
    batch = np.asarray(Image.open(os.path.join(truth, "test", "images", name)))[None]
    ids = int8.predict(batch)[0][0]
    assert ids.dtype == np.uint8 and ids.shape == batch.shape[1:3] and ids.max() < len(CLASSES)
    # TensorFlow fp32 is the exported function itself (the same graph and weights as the SavedModel).
    same += int(np.count_nonzero(ids == module.segment(batch)["class_ids"].numpy()[0]))
    pixels += ids.size
  assert block["evaluation"]["pixels"] == pixels
  assert same / pixels == pytest.approx(block["agreement"], abs=1e-6)


def test_failed_gate_prints_the_numbers_exits_1_and_writes_nothing_unless_forced(exported, tmp_path, capsys):
  model_dir, calibration, _truth, _module = exported
  model_dir = _copy(model_dir, tmp_path)
  with open(os.path.join(model_dir, "card.json"), "rb") as handle:
    card_before = handle.read()
  status, out, err = _run(capsys, "--model", model_dir, "--calibration", calibration, "--agreement_min", "1.01")
  assert status == 1
  assert "gate failed; nothing written" in err
  assert "agreement with TF fp32:" in err and "(needs >= 1.01)  FAIL" in err
  assert "not measured (no --truth_data)" in err and "6 calibration images (not held out" in err
  assert json.loads(out.strip().splitlines()[-1])["written"] is False
  assert not os.path.exists(os.path.join(model_dir, "openvino", "model_int8.xml"))
  assert not os.path.exists(os.path.join(model_dir, "openvino", "model_int8.bin"))
  with open(os.path.join(model_dir, "card.json"), "rb") as handle:
    assert handle.read() == card_before

  # --force writes it anyway and the card says the gate failed.
  argv = ("--model", model_dir, "--calibration", calibration, "--agreement_min", "1.01", "--speed_seconds", "0")
  status, out, err = _run(capsys, *argv, "--force")
  assert status == 0, err
  assert "gate failed, forced" in out
  with open(os.path.join(model_dir, "card.json"), encoding="utf-8") as handle:
    block = json.load(handle)["openvino"]["int8"]
  assert block["gate"]["status"] == "failed, forced" and block["gate"]["passed"] is False
  assert block["mean_iou"] is None and not block["evaluation"]["held_out"] and "speed" not in block
  assert os.path.exists(os.path.join(model_dir, "openvino", "model_int8.xml"))


def test_without_calibration_data_one_line_says_what_to_pass(exported, tmp_path, capsys):
  model_dir, _calibration, _truth, _module = exported
  result = subprocess.run(
    [sys.executable, "-m", "model.quantize", "--model", model_dir], cwd=REPO, capture_output=True, text=True
  )
  assert result.returncode == 2 and result.stdout == ""
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("model.quantize: error: no calibration images")
  assert "--calibration 'GLOB'" in lines[0] and "--data DATA --split train" in lines[0]

  # A card whose training data is not on this machine says so, with the same advice.
  model_dir = _copy(model_dir, tmp_path)
  card_path = os.path.join(model_dir, "card.json")
  with open(card_path, encoding="utf-8") as handle:
    card = json.load(handle)
  card["training"]["command"] = "python -m model.train --data data/elsewhere --out runs/x"
  write_card(model_dir, card)
  status, out, err = _run(capsys, "--model", model_dir)
  assert status == 2 and out == ""
  assert "training data data/elsewhere has no 'train' split here" in err and "--calibration 'GLOB'" in err
  assert not os.path.exists(os.path.join(model_dir, "openvino", "model_int8.xml"))
