"""A user's own data, end to end: classes.json -> check -> train -> export -> pipeline, for three kinds of image.

Each data set is tiny and generated here with real codecs (Pillow PNG,
tifffile TIFF): bright objects on a darker background, so that a couple of
hundred training steps learn them. The three kinds are the ones the own-data
issue names: 8-bit greyscale, 16-bit using only a narrow range (a
microscope's 0-4000 of 65535), and 4-band 16-bit TIFF (RGB + near-infrared).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tifffile
from PIL import Image
from pipeline_helpers import REPO, check_accounting, read_mask, read_outputs

from model.training.evaluate import evaluate
from pipeline.run import run
from transforms.imaging.records import MASKS_DIR, REPORT_FILE

CLASSES = [{"id": 0, "name": "background"}, {"id": 1, "name": "object", "color": [250, 200, 0]}]

# Every test uses the module fixture that trains and exports one model per kind of data.
pytestmark = pytest.mark.slow


def _scene(rng, size, kind):
  """(image [H, W, C] in its own dtype, mask [H, W]) with 1-3 bright discs."""
  yy, xx = np.mgrid[:size, :size]
  mask = np.zeros((size, size), np.uint8)
  for _ in range(rng.integers(1, 4)):  # objects several network strides (8 px) across
    cy, cx, radius = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(7, 12)
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1
  noise = rng.normal(0, 1, (size, size))
  inside = mask.astype(np.float64)
  if kind == "grey8":
    image = np.clip(60 + 120 * inside + 12 * noise, 0, 255).astype(np.uint8)[:, :, None]
  elif kind == "narrow16":
    image = np.clip(300 + 3000 * inside + 150 * noise, 0, 4000).astype(np.uint16)[:, :, None]
  else:  # four bands; the object shows in near-infrared (band 3) only, the visible bands carry no signal
    visible = rng.integers(500, 9000, 3) + rng.normal(0, 300, (size, size, 3))
    nir = 2000 + 30000 * inside + 800 * noise
    image = np.clip(np.dstack([visible, nir]), 0, 65535).astype(np.uint16)
  return image, mask


def _save_image(path_stem, image, kind):
  if kind == "band4":
    tifffile.imwrite(
      path_stem + ".tif", image, photometric="rgb" if image.shape[2] == 3 else "minisblack", planarconfig="contig"
    )
    return path_stem + ".tif"
  Image.fromarray(image[:, :, 0]).save(path_stem + ".png")
  return path_stem + ".png"


def _make_dataset(root, kind, counts=(("train", 12), ("val", 2), ("test", 2)), size=48):
  rng = np.random.default_rng({"grey8": 1, "narrow16": 2, "band4": 3}[kind])
  for split, count in counts:
    os.makedirs(os.path.join(root, split, "images"))
    os.makedirs(os.path.join(root, split, "masks"))
    for index in range(count):
      image, mask = _scene(rng, size, kind)
      _save_image(os.path.join(root, split, "images", f"{split}_{index:02d}"), image, kind)
      Image.fromarray(mask).save(os.path.join(root, split, "masks", f"{split}_{index:02d}.png"))
  with open(os.path.join(root, "classes.json"), "w") as handle:
    json.dump(CLASSES, handle)
  return root


KINDS = ("grey8", "narrow16", "band4")
# One kind's training and export, as the fixture's child process runs it: model.train's train() on the parsed
# arguments, then model.export's export() of the best checkpoint.
_TRAIN_AND_EXPORT = r"""
import json, os, sys
from model.artifact import export as export_module
from model.training import train as train_module
kind, argv, run_dir, model_dir = json.loads(sys.argv[1])
train_module.train(train_module.parse_args(argv), command="python -m model.train (test)")
export_module.export(os.path.join(run_dir, "best.keras"), model_dir, name=f"test-{kind}")
"""


def _train_args(data_dir, run_dir):
  return [
    "--data",
    data_dir,
    "--out",
    run_dir,
    "--width",
    "8",
    "--image_size",
    "32",
    "--batch_size",
    "8",
    "--epochs",
    "4",
    "--min_steps_per_epoch",
    "40",
    "--learning_rate",
    "5e-3",
    "--class_weights",
    "median_frequency",
    "--verbose",
    "0",
  ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """{kind: (data, run and model directories)}: the three kinds trained and exported side by side.

  Each kind in its own process, all three at once: training is mostly single-threaded graph building, so
  the machine's cores take one kind each instead of one after another. The code run is the same train()
  and export() as in this process; the card is read back from the model directory, as export wrote it.
  """
  jobs = {}
  for kind in KINDS:
    root = tmp_path_factory.mktemp(kind)
    data_dir = _make_dataset(str(root / "data"), kind)
    run_dir, model_dir = str(root / "run"), str(root / "model")
    log = open(root / "train.log", "w")
    command = [
      sys.executable,
      "-c",
      _TRAIN_AND_EXPORT,
      json.dumps([kind, _train_args(data_dir, run_dir), run_dir, model_dir]),
    ]
    env = dict(os.environ, PYTHONPATH=REPO)
    jobs[kind] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env), log, root)
  codes = {kind: process.wait() for kind, (process, _, _) in jobs.items()}  # every process ends before a check fails
  built = {}
  for kind, (_, log, root) in jobs.items():
    log.close()
    assert codes[kind] == 0, (
      f"{kind}: training or export failed ({codes[kind]}):\n{(root / 'train.log').read_text()[-3000:]}"
    )
    built[kind] = (str(root / "data"), str(root / "run"), str(root / "model"))
  return built


@pytest.fixture(scope="module", params=KINDS)
def exported(request, trained):
  kind = request.param
  data_dir, run_dir, model_dir = trained[kind]
  with open(os.path.join(model_dir, "card.json")) as handle:
    card = json.load(handle)
  return kind, data_dir, run_dir, model_dir, card


EXPECTED_INPUT = {"grey8": (1, "uint8", "grey"), "narrow16": (1, "uint16", "grey"), "band4": (4, "uint16", "bands")}


def test_card_records_bands_dtype_normalisation_and_classes(exported):
  kind, _, run_dir, model_dir, card = exported
  channels, dtype, color = EXPECTED_INPUT[kind]
  assert (card["input"]["channels"], card["input"]["dtype"], card["input"]["color"]) == (channels, dtype, color)
  normalization = card["input"]["normalization"]
  assert len(normalization["mean"]) == len(normalization["std"]) == channels
  if kind == "narrow16":  # measured on the data, not assumed from the dtype's range
    assert 300 < normalization["mean"][0] < 1500 and normalization["std"][0] > 500
  band_stats = card["trained_on"]["band_stats"]  # the OOD check's reference, in the input's own units
  assert len(band_stats["p01"]) == len(band_stats["p99"]) == channels
  assert band_stats["command"].startswith("python -m model.check_data ")
  assert [c["name"] for c in card["classes"]] == ["background", "object"]
  assert card["classes"][1]["color"] == [250, 200, 0]
  assert set(card["training"]["class_weights"]) == {"background", "object"}
  assert card["training"]["class_weights"]["object"] > card["training"]["class_weights"]["background"]
  with open(os.path.join(run_dir, "run.json")) as handle:
    assert json.load(handle)["data_check"]["channels"] == channels


def test_exported_signature_takes_the_cards_dtype_and_bands(exported):
  kind, _, _, model_dir, card = exported
  channels, dtype, _ = EXPECTED_INPUT[kind]
  loaded = tf.saved_model.load(os.path.join(model_dir, "saved_model"))
  spec = loaded.signatures["serving_default"].structured_input_signature[1]["images"]
  assert spec.dtype == tf.as_dtype(dtype) and spec.shape.as_list() == [None, None, None, channels]
  outputs = loaded.signatures["serving_mixed_float16"](
    images=tf.fill([1, 40, 40, channels], tf.constant(60000 if dtype == "uint16" else 200, tf.as_dtype(dtype)))
  )
  assert outputs["class_ids"].shape == (1, 40, 40)
  assert np.isfinite(outputs["confidence"].numpy()).all()  # 16-bit values never pass through float16 unnormalised


def test_the_model_learned_the_objects(exported):
  _, data_dir, _, model_dir, _ = exported
  result = evaluate(model_dir, data_dir, "test")
  assert result["per_class_iou"]["object"] > 0.5, result["per_class_iou"]


def test_pipeline_segments_with_the_cards_classes(exported, tmp_path):
  kind, data_dir, _, model_dir, _ = exported
  images = os.path.join(data_dir, "test", "images")
  output = str(tmp_path / "out")
  run(["--input", os.path.join(images, "*"), "--output", output, "--model", model_dir, "--runner", "FnApiRunner"])
  summary, records, failures = read_outputs(output)
  check_accounting(summary, records, failures, expected_read=2)
  assert not failures
  assert [entry["name"] for entry in summary["classes"]] == ["background", "object"]
  for key, record in records.items():
    assert [c["name"] for c in record["classes"]] == ["background", "object"]
    mask = read_mask(output, key)
    assert mask.shape == (48, 48) and mask.max() <= 1
    truth = np.asarray(Image.open(os.path.join(data_dir, "test", "masks", os.path.splitext(key)[0] + ".png")))
    assert (mask == truth).mean() > 0.8
    with Image.open(os.path.join(output, MASKS_DIR, key + ".png")) as png:
      assert png.getpalette()[3:6] == [250, 200, 0]
  with open(os.path.join(output, REPORT_FILE)) as handle:
    report = handle.read()
  assert "object" in report and "water" not in report
