"""model.check_data on small real datasets written with Pillow and tifffile: what it reports and what it rejects."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image
from pipeline_helpers import REPO

from model.data.check_data import DataError, check_dataset, format_report, main
from model.data.classes import classes_from_json, write_classes_file

CLASSES = classes_from_json(
  [{"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "nucleus", "color": [230, 60, 60]}]
)


def write_image(path, array, planar=False):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if path.endswith((".tif", ".tiff")):
    data = np.moveaxis(array, -1, 0) if planar else array
    tifffile.imwrite(path, data, photometric="minisblack", planarconfig="separate" if planar else "contig")
  else:
    Image.fromarray(array).save(path)


def write_mask(path, ids, palette=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(ids.astype(np.uint8), "P" if palette else None)
  if palette:
    image.putpalette(palette)
  image.save(path)


def make_mask(height, width, seed):
  mask = (np.random.default_rng(seed).random((height, width)) > 0.7).astype(np.uint8)
  mask[0, 0] = 255
  return mask


def make_dataset(root, images, splits=("train", "val"), planar=False):
  """Write image stems -> arrays (same set per split) with generated masks; returns {split: [masks]}."""
  write_classes_file(str(root), CLASSES)
  masks = {}
  for split_index, split in enumerate(splits):
    masks[split] = []
    for index, (filename, array) in enumerate(images.items()):
      stem = os.path.splitext(filename)[0]
      write_image(str(root / split / "images" / filename), array, planar=planar)
      mask = make_mask(array.shape[0], array.shape[1], seed=10 * split_index + index)
      write_mask(str(root / split / "masks" / f"{stem}.png"), mask)
      masks[split].append(mask)
  return masks


def expected_counts(masks):
  stacked = np.concatenate([m.ravel() for m in masks])
  return [int((stacked == 0).sum()), int((stacked == 1).sum())], int((stacked == 255).sum())


def test_greyscale_8bit_dataset_is_described_exactly(tmp_path):
  rng = np.random.default_rng(0)
  images = {f"img_{i}.png": rng.integers(0, 256, (20 + i, 30 - i), dtype=np.uint8) for i in range(3)}
  masks = make_dataset(tmp_path, images)

  report = check_dataset(str(tmp_path), CLASSES)

  assert report["classes"] == ["background", "nucleus"]
  assert (report["channels"], report["dtype"]) == (1, "uint8")
  assert report["missing_splits"] == ["test"]
  train = report["splits"]["train"]
  assert (train["images"], train["masks"], train["layout"]) == (3, 3, "folders")
  assert train["height"] == [20, 22] and train["width"] == [28, 30]
  class_pixels, ignore = expected_counts(masks["train"])
  assert train["class_pixels"] == class_pixels and train["ignore_pixels"] == ignore == 3
  assert report["splits"]["val"]["class_pixels"] == expected_counts(masks["val"])[0]
  # Small images are sampled whole, so the statistics are exact over the train split.
  pixels = np.concatenate([a.ravel() for a in images.values()]).astype(np.float64)
  stats = report["band_stats"]
  assert stats["mean"] == [pytest.approx(pixels.mean(), abs=1e-3)]
  assert stats["std"] == [pytest.approx(pixels.std(), abs=1e-3)]
  assert stats["p01"] == [pytest.approx(np.percentile(pixels, 1), abs=1e-3)]
  assert stats["p99"] == [pytest.approx(np.percentile(pixels, 99), abs=1e-3)]
  text = format_report(report)
  assert "1 channel, uint8" in text and "not present (optional): test" in text and "1 nucleus" in text


def test_sixteen_bit_narrow_range_is_kept_native(tmp_path):
  # Like the nuclei image: 16-bit storage, values only 0..235; nothing may rescale them.
  rng = np.random.default_rng(1)
  images = {f"n{i}.png": rng.integers(0, 236, (16, 16)).astype(np.uint16) for i in range(2)}
  make_dataset(tmp_path, images, splits=("train",))

  report = check_dataset(str(tmp_path), ["background", "nucleus"])

  assert (report["channels"], report["dtype"]) == (1, "uint16")
  pixels = np.concatenate([a.ravel() for a in images.values()])
  assert report["band_stats"]["p99"][0] <= 235
  assert report["band_stats"]["mean"][0] == pytest.approx(pixels.mean(), abs=1e-3)


@pytest.mark.parametrize("planar", [False, True], ids=["contiguous", "planar"])
def test_four_band_uint16_tiff(tmp_path, planar):
  rng = np.random.default_rng(2)
  offsets = np.array([100, 5000, 20000, 60000], dtype=np.uint16)
  images = {f"tile_{i}.tif": (rng.integers(0, 50, (24, 20, 4)) + offsets).astype(np.uint16) for i in range(2)}
  masks = make_dataset(tmp_path, images, splits=("train", "test"), planar=planar)

  report = check_dataset(str(tmp_path), None, splits=["train", "val", "test"])

  assert (report["channels"], report["dtype"]) == (4, "uint16")
  assert report["splits"]["test"]["class_pixels"] == expected_counts(masks["test"])[0]
  pixels = np.concatenate([a.reshape(-1, 4) for a in images.values()]).astype(np.float64)
  assert report["band_stats"]["mean"] == pytest.approx(list(pixels.mean(axis=0)), abs=1e-3)
  assert report["band_stats"]["p01"] == pytest.approx(list(np.percentile(pixels, 1, axis=0)), abs=1e-3)
  assert report["band_stats"]["p99"] == pytest.approx(list(np.percentile(pixels, 99, axis=0)), abs=1e-3)


def test_every_problem_is_reported_together_naming_its_file(tmp_path):
  write_classes_file(str(tmp_path), CLASSES)
  grey = np.zeros((10, 12), np.uint8)
  ids = np.zeros((10, 12), np.uint8)
  train = tmp_path / "train"
  write_image(str(train / "images" / "good.png"), grey)
  write_mask(str(train / "masks" / "good.png"), ids)
  write_image(str(train / "images" / "lonely.png"), grey)  # no mask
  write_mask(str(train / "masks" / "orphan.png"), ids)  # no image
  write_image(str(train / "images" / "a.png"), grey)
  write_mask(str(train / "masks" / "a.png"), np.zeros((10, 11), np.uint8))  # wrong size
  write_image(str(train / "images" / "b.png"), grey)
  bad_ids = ids.copy()
  bad_ids[0, :3] = 7
  write_mask(str(train / "masks" / "b.png"), bad_ids)
  write_image(str(train / "images" / "c.png"), grey)
  write_image(str(train / "masks" / "c.png"), np.zeros((10, 12, 3), np.uint8))  # RGB mask
  write_image(str(train / "images" / "d.png"), grey)
  # Drawn by colour: index 0 painted in the nucleus colour, index 1 in the background colour.
  write_mask(str(train / "masks" / "d.png"), np.eye(10, 12, dtype=np.uint8), palette=[230, 60, 60, 0, 0, 0])
  write_image(str(train / "images" / "img_07.png"), np.zeros((10, 12, 3), np.uint8))  # 3 channels, others 1
  write_mask(str(train / "masks" / "img_07.png"), ids)

  with pytest.raises(DataError) as caught:
    check_dataset(str(tmp_path), CLASSES)

  problems = caught.value.problems
  text = "\n".join(problems)
  assert "train/images/lonely.png has no mask train/masks/lonely.png" in text
  assert "train/masks/orphan.png has no image" in text
  assert "train/masks/a.png is 11x10 but train/images/a.png is 12x10" in text
  assert "train/masks/b.png has class id 7, but classes.json lists 0..1; fix the mask or add the class" in text
  assert "train/masks/c.png is an RGB colour mask" in text and "palette indices are the ids" in text
  assert "its three channels are identical, so saving just one of them is enough" in text
  assert "train/masks/d.png is a palette image whose colours, not its indices, mark the classes" in text
  assert "train/images/img_07.png has 3 channels but the others have 1" in text
  assert len(problems) == 7, problems
  assert str(caught.value).startswith(f"7 problems in {tmp_path}:")


def test_palette_index_mask_is_accepted(tmp_path):
  write_classes_file(str(tmp_path), CLASSES)
  write_image(str(tmp_path / "train" / "images" / "x.png"), np.zeros((6, 8, 3), np.uint8))
  ids = np.zeros((6, 8), np.uint8)
  ids[2:4, 2:6] = 1
  # The VOC convention: the indices are the ids, the palette only draws them (here in the class colours).
  write_mask(str(tmp_path / "train" / "masks" / "x.png"), ids, palette=[0, 0, 0, 230, 60, 60])

  report = check_dataset(str(tmp_path), CLASSES, splits=["train"])

  assert report["splits"]["train"]["class_pixels"] == [40, 8]


def test_many_problems_are_capped_with_a_count(tmp_path):
  write_classes_file(str(tmp_path), CLASSES)
  for index in range(25):
    write_image(str(tmp_path / "train" / "images" / f"i{index:02d}.png"), np.zeros((4, 4), np.uint8))

  with pytest.raises(DataError) as caught:
    check_dataset(str(tmp_path), CLASSES)

  message = str(caught.value)
  assert len(caught.value.problems) == 25
  assert message.count("has no mask") == 20 and message.rstrip().endswith("and 5 more")


def test_missing_or_empty_splits(tmp_path):
  write_classes_file(str(tmp_path), CLASSES)
  with pytest.raises(DataError, match="there is no train split"):
    check_dataset(str(tmp_path), CLASSES)
  make_dataset(tmp_path, {"a.png": np.zeros((4, 4), np.uint8)}, splits=("train",))
  os.makedirs(tmp_path / "val" / "images")
  with pytest.raises(DataError, match=r"val/images holds no images \(the val split is empty\)"):
    check_dataset(str(tmp_path), CLASSES)
  with pytest.raises(DataError, match="^1 problem in .*:\n  - no images could be read from the test split$"):
    check_dataset(str(tmp_path), CLASSES, splits=["test"])


def test_missing_class_list_is_a_data_error(tmp_path):
  make_dataset(tmp_path, {"a.png": np.zeros((4, 4), np.uint8)}, splits=("train",))
  os.remove(tmp_path / "classes.json")
  with pytest.raises(DataError, match="has no classes.json"):
    check_dataset(str(tmp_path), None)
  assert check_dataset(str(tmp_path), "background,nucleus")["classes"] == ["background", "nucleus"]


def test_tfrecord_split_is_decoded_and_checked(tmp_path):
  import io

  import tensorflow as tf

  def encoded(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()

  def example(image, mask, key):
    feature = {
      "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded(image)])),
      "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode()])),
      "image/segmentation/class/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded(mask)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

  write_classes_file(str(tmp_path), CLASSES)
  os.makedirs(tmp_path / "train" / "shards")
  image = np.full((8, 8), 50, np.uint16)
  ids = np.zeros((8, 8), np.uint8)
  ids[:2] = 1
  with tf.io.TFRecordWriter(str(tmp_path / "train" / "shards" / "train-0.tfrecord")) as writer:
    writer.write(example(image, ids, "first"))
    writer.write(example(image, ids, "second"))
  report = check_dataset(str(tmp_path), CLASSES)
  assert report["splits"]["train"]["layout"] == "tfrecord"
  assert report["splits"]["train"]["images"] == 2 and report["splits"]["train"]["class_pixels"] == [96, 32]
  assert report["dtype"] == "uint16"

  with tf.io.TFRecordWriter(str(tmp_path / "train" / "shards" / "train-1.tfrecord")) as writer:
    writer.write(example(image, np.full((8, 8, 3), (230, 60, 60), np.uint8), "coloured"))
  with pytest.raises(DataError) as caught:
    check_dataset(str(tmp_path), CLASSES)
  assert caught.value.problems == [
    "train/shards/train-1.tfrecord record 0 (coloured) mask is an RGB colour mask, not one channel of class ids; "
    "save one channel of class ids (0..n-1, 255 = ignore), e.g. a palette PNG whose palette indices are the ids"
  ]


def test_cli_exit_codes_and_output(tmp_path, capsys):
  make_dataset(tmp_path, {"a.png": np.zeros((4, 6), np.uint8)}, splits=("train",))
  assert main([str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "2 classes (background, nucleus)" in out and "train band statistics" in out
  assert main([str(tmp_path), "--json"]) == 0
  assert json.loads(capsys.readouterr().out)["splits"]["train"]["images"] == 1

  os.remove(tmp_path / "train" / "masks" / "a.png")
  completed = subprocess.run(
    [sys.executable, "-m", "model.check_data", str(tmp_path), "--splits", "train"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert completed.returncode == 1
  assert completed.stderr.startswith(f"check_data: error: 1 problem in {tmp_path}:")
  assert "train/images/a.png has no mask train/masks/a.png" in completed.stderr
