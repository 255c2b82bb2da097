"""Class lists: DIR/classes.json, --classes, generated palettes, and the errors that replace silent defaults."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from model.data.classes import (
  ClassesError,
  classes_from_json,
  classes_from_names,
  dataset_classes,
  distinct_colors,
  read_classes_file,
)
from model.training.train import class_weights


def _write(path, entries):
  path.write_text(json.dumps(entries))
  return path


def test_classes_json_with_and_without_colours(tmp_path):
  _write(
    tmp_path / "classes.json", [{"id": 0, "name": "background"}, {"id": 1, "name": "nucleus", "color": [230, 60, 60]}]
  )
  classes = dataset_classes(str(tmp_path))
  assert [c.name for c in classes] == ["background", "nucleus"]
  assert classes[1].color == (230, 60, 60)
  assert classes[0].color == (0, 0, 0)  # generated: id 0 is drawn black


def test_generated_palette_is_distinct():
  colors = distinct_colors(12)
  assert len(set(colors)) == 12
  assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colors)


def test_classes_flag_alone_and_agreeing_with_the_file(tmp_path):
  assert [c.name for c in dataset_classes(str(tmp_path), "background, nucleus")] == ["background", "nucleus"]
  _write(tmp_path / "classes.json", [{"id": 0, "name": "background"}, {"id": 1, "name": "nucleus"}])
  assert [c.id for c in dataset_classes(str(tmp_path), "background,nucleus")] == [0, 1]
  with pytest.raises(ClassesError, match="disagrees with .*classes.json"):
    dataset_classes(str(tmp_path), "background,cell")


def test_neither_file_nor_flag_shows_the_file_to_write(tmp_path):
  with pytest.raises(ClassesError) as caught:
    dataset_classes(str(tmp_path))
  message = str(caught.value)
  assert str(tmp_path / "classes.json") in message and '"name": "background"' in message and "--classes" in message
  assert "\n" not in message


@pytest.mark.parametrize(
  "entries, expected",
  [
    ([{"id": 0, "name": "a"}, {"id": 2, "name": "b"}], "ids must be 0..n-1"),
    ([{"id": 0, "name": "a"}, {"id": 1, "name": "a"}], "unique"),
    ([{"id": 0, "name": "a"}], "at least 2"),
    ([{"id": 0, "name": "a"}, {"id": 1, "name": "b", "color": [300, 0, 0]}], "three integers 0-255"),
    ([{"id": 0}, {"id": 1, "name": "b"}], "at least an id and a name"),
    ({"background": 0}, "non-empty JSON list"),
  ],
)
def test_malformed_class_lists_name_the_problem(tmp_path, entries, expected):
  path = _write(tmp_path / "classes.json", entries)
  with pytest.raises(ClassesError, match=expected) as caught:
    read_classes_file(str(path))
  assert str(path) in str(caught.value)


def test_invalid_json_names_the_file(tmp_path):
  path = tmp_path / "classes.json"
  path.write_text("[{id: 0}]")
  with pytest.raises(ClassesError, match="is not valid JSON"):
    read_classes_file(str(path))


def test_empty_name_in_flag():
  with pytest.raises(ClassesError, match="empty name"):
    classes_from_names("background,,nucleus")


def test_round_trip_keeps_ids_names_and_colours():
  classes = classes_from_names("water,vegetation,road")
  assert classes_from_json([c.to_json() for c in classes]) == classes


def test_median_frequency_weights_balance_rare_classes():
  # 80 % background, 15 % A, 5 % B: median frequency 0.15
  weights = class_weights("median_frequency", [800, 150, 50], ["bg", "a", "b"])
  assert weights == pytest.approx([0.15 / 0.8, 1.0, 3.0])
  assert class_weights("none", [1, 1], ["a", "b"]) is None
  assert class_weights("1,4", [1, 1], ["a", "b"]) == [1.0, 4.0]
  # a class missing from training keeps weight 1 instead of dividing by zero
  assert class_weights("median_frequency", [10, 0, 10], ["a", "b", "c"]) == pytest.approx([1.0, 1.0, 1.0])


@pytest.mark.parametrize("spec", ["1,2,3", "1,x", "1,-2"])
def test_bad_class_weight_lists(spec):
  with pytest.raises(ValueError, match="one per class: bg,fg"):
    class_weights(spec, [1, 1], ["bg", "fg"])


def test_train_without_classes_is_a_one_line_error(tmp_path):
  (tmp_path / "train" / "images").mkdir(parents=True)
  result = subprocess.run(
    [sys.executable, "-m", "model.train", "--data", str(tmp_path), "--out", str(tmp_path / "run")],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2
  lines = [line for line in result.stderr.splitlines() if line.startswith("model.train: error:")]
  assert len(lines) == 1 and "classes.json" in lines[0] and "Traceback" not in result.stderr


def test_train_without_a_validation_split_is_a_data_error(tmp_path):
  (tmp_path / "train" / "images").mkdir(parents=True)
  (tmp_path / "train" / "masks").mkdir(parents=True)
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "train" / "images" / "a.png")
  Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "train" / "masks" / "a.png")
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "model.train",
      "--data",
      str(tmp_path),
      "--classes",
      "bg,fg",
      "--out",
      str(tmp_path / "run"),
    ],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2, result.stderr
  assert "model.train: error:" in result.stderr and "no 'val' split to validate on" in result.stderr
  assert "Traceback" not in result.stderr
