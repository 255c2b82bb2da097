"""The bundled default model meets its quality bar on scenes it has never seen.

A fresh test split with a seed no training or validation run used (the
default was trained on seed 1 and reported on seed 2), measured by the same
`model.evaluate` a user runs, through the exported serving function.
"""

import json
import os

from pipeline_helpers import REPO

from model.data.make_dataset import make_dataset
from model.training.evaluate import evaluate

DEFAULT_MODEL = os.path.join(REPO, "model", "default")


def test_default_model_quality_on_a_fresh_seed(tmp_path):
  make_dataset(str(tmp_path), 4242, {"train": 0, "val": 0, "test": 40}, 128)
  result = evaluate(DEFAULT_MODEL, str(tmp_path), "test")
  assert result["images"] == 40
  assert result["mean_iou"] >= 0.95, result
  assert min(result["per_class_iou"].values()) >= 0.92, result["per_class_iou"]
  # The CPU engine's precisions hold the quality: fp32 to the pixel, int8 within half a point of mean IoU.
  for precision, tolerance in (("fp32", 1e-9), ("int8", 0.005)):
    engine_result = evaluate(DEFAULT_MODEL, str(tmp_path), "test", "openvino", precision)
    assert engine_result["model_format"] == f"openvino {precision}"
    assert abs(engine_result["mean_iou"] - result["mean_iou"]) <= tolerance, (precision, engine_result["mean_iou"])


def test_card_records_the_measured_metrics():
  with open(os.path.join(DEFAULT_MODEL, "card.json")) as handle:
    card = json.load(handle)
  test = card["metrics"]["test"]
  assert test["mean_iou"] >= 0.95 and min(test["per_class_iou"].values()) >= 0.93
  assert card["architecture"]["variant"] == "fcn2s"
  assert set(test["per_class_iou"]) == {entry["name"] for entry in card["classes"]}
  assert test["seed"] != card["trained_on"]["seed"]
  size = sum(
    os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(DEFAULT_MODEL) for name in names
  )
  assert size < 20 * 2**20, f"model/default is {size / 2**20:.1f} MiB"


def test_model_reproduce_runs_the_training_command_the_card_records():
  from model.artifact.reproduce import commands

  with open(os.path.join(DEFAULT_MODEL, "card.json")) as handle:
    card = json.load(handle)
  train = next(command for command in commands("model/default", "runs/reproduce_fcn2s") if "model.train" in command)
  assert " ".join(["python"] + train) == card["training"]["command"]
  assert card["version"] == "1.1.0"
