"""The dataset generator and the tf.data input in both on-disk layouts."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from model.data.classes import CLASS_NAMES, NUM_CLASSES, dataset_classes
from model.data.data import augment, evaluation_dataset, find_split, training_dataset
from model.data.make_dataset import example_rng, generate_example
from model.data.make_dataset import main as make_dataset_main


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("mosaic")
  make_dataset_main(
    [
      "--out",
      str(out),
      "--seed",
      "7",
      "--train",
      "6",
      "--val",
      "2",
      "--test",
      "2",
      "--size",
      "48",
      "--tfrecord",
      "--shard_size",
      "4",
    ]
  )
  return str(out)


def test_generator_is_deterministic_and_seed_dependent():
  image_a, mask_a = generate_example(example_rng(1, "train", 3), 64)
  image_b, mask_b = generate_example(example_rng(1, "train", 3), 64)
  image_c, _ = generate_example(example_rng(2, "train", 3), 64)
  np.testing.assert_array_equal(image_a, image_b)
  np.testing.assert_array_equal(mask_a, mask_b)
  assert not np.array_equal(image_a, image_c)
  assert image_a.shape == (64, 64, 3) and image_a.dtype == np.uint8
  assert mask_a.shape == (64, 64) and mask_a.max() < NUM_CLASSES


def test_all_classes_appear_over_a_few_images():
  rng = np.random.default_rng(0)
  seen = set()
  for _ in range(20):
    seen |= set(np.unique(generate_example(rng, 96)[1]).tolist())
  assert seen == set(range(NUM_CLASSES))


def test_writes_folders_shards_and_description(dataset_dir):
  with open(os.path.join(dataset_dir, "dataset.json")) as handle:
    description = json.load(handle)
  assert description["seed"] == 7 and len(description["classes"]) == NUM_CLASSES
  assert [c.name for c in dataset_classes(dataset_dir)] == list(CLASS_NAMES)  # classes.json, read as training reads it
  assert {split: info["images"] for split, info in description["splits"].items()} == {"train": 6, "val": 2, "test": 2}
  assert len(os.listdir(os.path.join(dataset_dir, "train", "images"))) == 6
  mask = np.array(Image.open(os.path.join(dataset_dir, "train", "masks", "train_00000.png")))
  assert mask.ndim == 2 and mask.dtype == np.uint8 and mask.max() < NUM_CLASSES
  assert sorted(os.listdir(os.path.join(dataset_dir, "train", "shards"))) == [
    "train-00000-of-00002.tfrecord",
    "train-00001-of-00002.tfrecord",
  ]


def test_folder_and_tfrecord_layouts_give_the_same_pairs(dataset_dir, tmp_path):
  shard_only = tmp_path / "shards_only"
  (shard_only / "val" / "shards").mkdir(parents=True)
  for name in os.listdir(os.path.join(dataset_dir, "val", "shards")):
    os.symlink(os.path.join(dataset_dir, "val", "shards", name), shard_only / "val" / "shards" / name)
  assert find_split(str(shard_only), "val")[0] == "tfrecord"
  assert find_split(dataset_dir, "val")[0] == "folders"
  from_folders = list(evaluation_dataset(dataset_dir, "val")[0])
  from_shards = list(evaluation_dataset(str(shard_only), "val")[0])
  assert len(from_folders) == len(from_shards) == 2
  for (image_a, mask_a), (image_b, mask_b) in zip(from_folders, from_shards):
    np.testing.assert_array_equal(image_a.numpy(), image_b.numpy())
    np.testing.assert_array_equal(mask_a.numpy(), mask_b.numpy())


def test_training_dataset_batches_augmented_crops(dataset_dir):
  dataset, steps = training_dataset(dataset_dir, "train", batch_size=3, crop_size=40, seed=0)
  assert steps == 2
  images, masks = next(iter(dataset))
  assert images.shape == (3, 40, 40, 3) and images.dtype == tf.float32
  assert masks.shape == (3, 40, 40) and masks.dtype == tf.int32
  assert set(np.unique(masks.numpy())) <= set(range(NUM_CLASSES)) | {255}


def test_augment_pads_masks_with_ignore_and_keeps_pixels_aligned():
  labels = (np.arange(16 * 16).reshape(16, 16) % 7).astype(np.int32)
  image = tf.constant(np.repeat(labels[:, :, None], 3, axis=2).astype(np.float32))
  mask = tf.constant(labels)
  out_image, out_mask = augment(image, mask, crop_size=24, scale_range=(1.0, 1.0))
  out_image, out_mask = out_image.numpy(), out_mask.numpy()
  assert (out_mask == 255).sum() == 24 * 24 - 16 * 16
  labelled = out_mask != 255
  np.testing.assert_array_equal(out_image[labelled][:, 0], out_mask[labelled].astype(np.float32))


def test_missing_split_raises_value_error(tmp_path):
  with pytest.raises(ValueError):
    find_split(str(tmp_path), "train")
