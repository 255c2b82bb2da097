"""End to end on a tiny generated dataset: train CLI, export, serve from a TensorFlow-only process, evaluate."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from model.artifact import export as export_module
from model.data.classes import NUM_CLASSES
from model.data.make_dataset import make_dataset
from model.training import evaluate as evaluate_module
from model.training import train as train_module

SERVE_SCRIPT = r"""
import sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
direct = loaded.segment(images)
default = loaded.signatures["serving_default"](images=tf.constant(images))
mixed = loaded.signatures["serving_mixed_float16"](images=tf.constant(images))
empty = loaded.segment(np.zeros((0, 5, 7, 3), np.uint8))
assert empty["class_ids"].shape == (0, 5, 7) and empty["class_ids"].dtype == tf.uint8, empty
assert empty["confidence"].shape == (0, 5, 7) and empty["confidence"].dtype == tf.float32, empty
tiny = loaded.segment(np.zeros((1, 1, 1, 3), np.uint8))
assert tiny["class_ids"].shape == (1, 1, 1), tiny
project_modules = [name for name in sys.modules if name == "model" or name.startswith("model.")]
np.savez(sys.argv[3], class_ids=direct["class_ids"].numpy(), confidence=direct["confidence"].numpy(),
         default_class_ids=default["class_ids"].numpy(), mixed_class_ids=mixed["class_ids"].numpy(),
         mixed_confidence=mixed["confidence"].numpy(), project_modules=np.array(project_modules, dtype=object))
"""


def _train_args(data_dir, out_dir, epochs, *flags):
  """model.train's arguments for a tiny model (width 8, 32 px crops, batches of 4), quietly."""
  argv = ["--data", data_dir, "--out", out_dir, "--width=8", "--image_size=32", "--batch_size=4", "--verbose=0"]
  return train_module.parse_args(argv + [f"--epochs={epochs}", *flags])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("run")
  data_dir = str(root / "data")
  make_dataset(data_dir, seed=11, counts={"train": 8, "val": 2, "test": 3}, size=40)
  out_dir = str(root / "run")
  args = _train_args(data_dir, out_dir, 2, "--warmup_epochs=1")
  state = train_module.train(args, command="python -m model.train (test)")
  return data_dir, out_dir, state


@pytest.mark.slow
def test_training_writes_checkpoints_and_logs(trained_run):
  _, out_dir, state = trained_run
  assert state["epoch"] == 2
  for name in ("best.keras", "last.keras", "metrics.jsonl", "metrics.csv", "run.json"):
    assert os.path.exists(os.path.join(out_dir, name)), name
  with open(os.path.join(out_dir, "metrics.jsonl")) as handle:
    rows = [json.loads(line) for line in handle]
  assert [row["epoch"] for row in rows] == [1, 2]
  assert state["best_val_mean_iou"] == pytest.approx(max(row["val_mean_iou"] for row in rows))


@pytest.mark.slow
def test_resume_continues_from_last_epoch(trained_run, tmp_path):
  data_dir, out_dir, _ = trained_run
  resumed_dir = tmp_path / "resumed"
  resumed_dir.mkdir()
  for name in ("last.keras", "state.json", "metrics.jsonl", "metrics.csv"):
    (resumed_dir / name).write_bytes(open(os.path.join(out_dir, name), "rb").read())
  args = _train_args(data_dir, str(resumed_dir), 3, "--resume")
  (resumed_dir / "run.json").write_bytes(open(os.path.join(out_dir, "run.json"), "rb").read())
  state = train_module.train(args, command="python -m model.train --resume (test)")
  assert state["epoch"] == 3
  with open(resumed_dir / "metrics.jsonl") as handle:
    rows = [json.loads(line) for line in handle]
  assert [row["epoch"] for row in rows] == [1, 2, 3]
  # The first run's cosine schedule ended at rate 0; resuming rebuilds it for 3 epochs, so epoch 3 still learns.
  assert rows[1]["learning_rate"] == pytest.approx(0.0, abs=1e-9)
  before = keras.models.load_model(os.path.join(out_dir, "last.keras")).get_layer("score32").get_weights()[0]
  after = keras.models.load_model(str(resumed_dir / "last.keras")).get_layer("score32").get_weights()[0]
  assert not np.allclose(before, after)
  with open(resumed_dir / "run.json") as handle:
    run = json.load(handle)
  assert run["command"] == "python -m model.train (test)"
  assert run["resumed_commands"] == ["python -m model.train --resume (test)"]


@pytest.mark.slow
def test_export_serves_from_a_tensorflow_only_process(trained_run, tmp_path):
  _, out_dir, _ = trained_run
  checkpoint = os.path.join(out_dir, "best.keras")
  model_dir = str(tmp_path / "exported")
  card = export_module.export(checkpoint, model_dir, name="test-model", version="0.0.1")
  assert card["format"] == "deconvseg-model/1" and card["stride"] == 32
  assert [entry["id"] for entry in card["classes"]] == list(range(NUM_CLASSES))
  assert card["signatures"]["serving_default"] == {"input": "images", "outputs": ["class_ids", "confidence"]}

  images = np.random.default_rng(0).integers(0, 256, size=(2, 37, 53, 3), dtype=np.uint8)
  np.save(tmp_path / "images.npy", images)
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  subprocess.run(
    [
      sys.executable,
      "-c",
      SERVE_SCRIPT,
      os.path.join(model_dir, "saved_model"),
      str(tmp_path / "images.npy"),
      str(tmp_path / "out.npz"),
    ],
    check=True,
    cwd=str(tmp_path),
    env=environment,
    timeout=120,
  )
  served = np.load(tmp_path / "out.npz", allow_pickle=True)
  assert list(served["project_modules"]) == []
  assert served["class_ids"].dtype == np.uint8 and served["class_ids"].shape == (2, 37, 53)
  assert served["confidence"].dtype == np.float32 and served["confidence"].shape == (2, 37, 53)
  assert served["class_ids"].max() < NUM_CLASSES
  np.testing.assert_array_equal(served["class_ids"], served["default_class_ids"])

  model = keras.models.load_model(checkpoint)
  probabilities = keras.ops.convert_to_numpy(
    keras.ops.softmax(model.predict(images.astype(np.float32), verbose=0), axis=-1)
  )
  np.testing.assert_array_equal(served["class_ids"], probabilities.argmax(-1).astype(np.uint8))
  np.testing.assert_allclose(served["confidence"], probabilities.max(-1), atol=1e-5)
  assert served["mixed_class_ids"].shape == (2, 37, 53)
  np.testing.assert_allclose(served["mixed_confidence"], served["confidence"], atol=0.05)


def test_evaluate_refuses_a_bad_tolerance_in_one_line(capsys):
  for value in ("-1", "nan", "two"):
    with pytest.raises(SystemExit) as exited:
      evaluate_module.parse_args(["--model", "m", "--data", "d", "--bf_tolerance", value])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("model.evaluate: error: ") and "--bf_tolerance" in lines[0], lines


@pytest.mark.slow
def test_evaluate_prints_table_then_json(trained_run, tmp_path, capsys):
  data_dir, out_dir, _ = trained_run
  checkpoint = os.path.join(out_dir, "best.keras")
  model_dir = str(tmp_path / "exported")
  export_module.main(["--checkpoint", checkpoint, "--out", model_dir, "--evaluate_data", data_dir])
  capsys.readouterr()
  evaluate_module.main(["--model", model_dir, "--data", data_dir, "--split", "test"])
  output = capsys.readouterr().out.strip().splitlines()
  result = json.loads(output[-1])
  assert "mean IoU" in "\n".join(output[:-1])
  assert result["images"] == 3 and result["seed"] == 11 and result["model_format"] == "saved_model"
  for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
    assert 0.0 <= result[key] <= 1.0
  # The boundary F-score beside IoU: per class over the images where defined, and its tolerance.
  assert "mean boundary F-score" in "\n".join(output[:-1]) and result["boundary_tolerance"] == 2.0
  assert 0.0 <= result["mean_boundary_f1"] <= 1.0
  assert set(result["per_class_boundary_f1"]) == set(result["per_class_iou"]) == set(result["boundary_f1_images"])
  for name, value in result["per_class_boundary_f1"].items():
    assert (value is None) == (result["boundary_f1_images"][name] == 0) and (value is None or 0.0 <= value <= 1.0)
  with open(os.path.join(model_dir, "card.json")) as handle:
    card = json.load(handle)
  assert card["metrics"]["test"]["mean_iou"] == pytest.approx(result["mean_iou"])
  from_checkpoint = evaluate_module.evaluate(checkpoint, data_dir, "test")
  assert from_checkpoint["model_format"] == "keras"
  assert from_checkpoint["mean_iou"] == pytest.approx(result["mean_iou"], abs=1e-3)


@pytest.mark.slow
def test_the_evaluate_command_reads_a_checkpoint_in_a_fresh_process(trained_run):
  """A .keras checkpoint names the project's custom layers: the command registers them before loading it."""
  data_dir, out_dir, _ = trained_run
  checkpoint = os.path.join(out_dir, "best.keras")
  command = [sys.executable, "-m", "model.evaluate", "--model", checkpoint, "--data", data_dir, "--split", "test"]
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["model_format"] == "keras" and result["images"] == 3
