"""tf.data input for segmentation in the two conventional on-disk layouts.

1. Folders: DIR/<split>/images/<stem>.png|jpg|tif and DIR/<split>/masks/<stem>.png
   (single-channel class ids, 255 = ignore), paired by file stem.
2. TFRecord shards: DIR/<split>/shards/*.tfrecord (or DIR/<split>*.tfrecord) of
   tf.train.Example with `image/encoded` and `image/segmentation/class/encoded`.

Images keep their own channel count and bit depth (1-channel, RGB or N-band,
8 or 16 bits; the model normalises them itself) and come out as float32
[H, W, C]; masks as int32 [H, W]. Plain 8-bit RGB PNG/JPEG go through
TensorFlow's decoders; everything else (TIFF, 16-bit, greyscale or
multi-band data kept as it is) through ``model.data.image_io``.
"""

import glob
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from model.data.classes import IGNORE_LABEL
from model.data.image_io import IMAGE_EXTENSIONS, Source, image_info, read_image, read_mask

_TF_DECODABLE = (".png", ".jpg", ".jpeg")


def _folder_pairs(split_dir: str) -> list[tuple[str, str]]:
  image_dir, mask_dir = os.path.join(split_dir, "images"), os.path.join(split_dir, "masks")
  images: dict[str, str] = {}
  for path in sorted(os.listdir(image_dir)):
    stem, extension = os.path.splitext(path)
    if extension.lower() in IMAGE_EXTENSIONS:
      images[stem] = os.path.join(image_dir, path)
  pairs = []
  for stem, image_path in images.items():
    mask_path = os.path.join(mask_dir, stem + ".png")
    if not os.path.exists(mask_path):
      raise ValueError(f"image {image_path} has no mask {mask_path}")
    pairs.append((image_path, mask_path))
  return pairs


def find_split(data_dir: str, split: str) -> tuple[str, list[Any]]:
  """Return ("folders", [(image, mask), ...]) or ("tfrecord", [shard, ...]) for one split."""
  split_dir = os.path.join(data_dir, split)
  if os.path.isdir(os.path.join(split_dir, "images")):
    pairs = _folder_pairs(split_dir)
    if pairs:
      return "folders", pairs
  shards = sorted(glob.glob(os.path.join(split_dir, "shards", "*.tfrecord")))
  shards = shards or sorted(glob.glob(os.path.join(data_dir, f"{split}*.tfrecord")))
  if shards:
    return "tfrecord", shards
  raise ValueError(
    f"no '{split}' data under {data_dir}: expected {split}/images + {split}/masks folders "
    f"or TFRecord shards in {split}/shards/"
  )


def _uses_tf_decoders(channels: int, dtype: str, image_paths: Sequence[str] = ()) -> bool:
  return (
    channels == 3 and dtype == "uint8" and all(os.path.splitext(p)[1].lower() in _TF_DECODABLE for p in image_paths)
  )


def _numpy_image(source: Source, channels: int, dtype: str) -> np.ndarray:
  """One image through model.data.image_io, checked against the dataset's bands and depth."""
  image = read_image(source)
  if image.shape[2] != channels or image.dtype != np.dtype(dtype):
    name = source if isinstance(source, str) else "a TFRecord image"
    raise ValueError(f"{name} is {image.shape[2]}-channel {image.dtype}, but the dataset is {channels}-channel {dtype}")
  return image


def _decoder(channels: int, dtype: str, tf_images: bool) -> Callable[[Any, Any, bool], tuple[Any, Any]]:
  """(image bytes or path, mask bytes or path, from_files) -> (image in its dtype, int32 mask)."""

  def decode(image_source: Any, mask_source: Any, from_files: bool) -> tuple[Any, Any]:
    if tf_images:
      image_bytes = tf.io.read_file(image_source) if from_files else image_source
      image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    else:
      image = tf.numpy_function(
        lambda source: _numpy_image(source.decode() if from_files else bytes(source), channels, dtype),
        [image_source],
        tf.as_dtype(dtype),
        stateful=False,
      )
    # Masks always go through read_mask: a palette mask's ids are its indices, not its colours.
    mask = tf.numpy_function(
      lambda source: read_mask(source.decode() if from_files else bytes(source)).astype(np.int32),
      [mask_source],
      tf.int32,
      stateful=False,
    )
    return tf.ensure_shape(image, [None, None, channels]), tf.ensure_shape(mask, [None, None])

  return decode


_EXAMPLE_FEATURES = {
  "image/encoded": tf.io.FixedLenFeature([], tf.string),
  "image/segmentation/class/encoded": tf.io.FixedLenFeature([], tf.string),
}


def load_split(
  data_dir: str,
  split: str,
  shuffle: bool = False,
  seed: int | None = None,
  channels: int = 3,
  dtype: str = "uint8",
) -> tuple[Any, int]:
  """Decoded (image, int32 mask) pairs of one split, decoded in parallel, in file order unless shuffled.

  Images keep their dtype here (uint8 or uint16) so a cached split costs
  less memory; callers cast to float32.
  """
  layout, items = find_split(data_dir, split)
  if layout == "folders":
    image_paths, mask_paths = zip(*items)
    decode = _decoder(channels, dtype, _uses_tf_decoders(channels, dtype, image_paths))
    dataset = tf.data.Dataset.from_tensor_slices((list(image_paths), list(mask_paths)))
    if shuffle:
      dataset = dataset.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(
      lambda image, mask: decode(image, mask, True), num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle
    )
    return dataset, len(items)
  decode = _decoder(channels, dtype, _uses_tf_decoders(channels, dtype))

  def parse(serialized: Any) -> tuple[Any, Any]:
    features = tf.io.parse_single_example(serialized, _EXAMPLE_FEATURES)
    return decode(features["image/encoded"], features["image/segmentation/class/encoded"], False)

  files = tf.data.Dataset.from_tensor_slices(items)
  if shuffle:
    files = files.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
  dataset = files.interleave(tf.data.TFRecordDataset, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
  count = sum(1 for _ in tf.data.TFRecordDataset(items))
  return dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle), count


def augment(image: Any, mask: Any, crop_size: int, scale_range: tuple[float, float] = (0.75, 1.25)) -> tuple[Any, Any]:
  """Random scale, pad (mask with ignore), crop to crop_size, flips and 90-degree turns.

  Aerial tiles and microscope slides have no up direction, so vertical flips
  and rotations are fair game. Works for any number of bands.
  """
  image = tf.cast(image, tf.float32)
  channels = image.shape[-1]
  scale = tf.random.uniform([], scale_range[0], scale_range[1])
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  new_shape = tf.cast(tf.round(shape * scale), tf.int32)
  image = tf.image.resize(image, new_shape, method="bilinear")
  mask = tf.image.resize(mask[:, :, None], new_shape, method="nearest")[:, :, 0]
  height = tf.maximum(new_shape[0], crop_size)
  width = tf.maximum(new_shape[1], crop_size)
  image = tf.image.pad_to_bounding_box(image, 0, 0, height, width)
  mask = tf.image.pad_to_bounding_box(mask[:, :, None] - IGNORE_LABEL, 0, 0, height, width)[:, :, 0] + IGNORE_LABEL
  stacked = tf.concat([image, tf.cast(mask[:, :, None], tf.float32)], axis=-1)
  stacked = tf.image.random_crop(stacked, [crop_size, crop_size, channels + 1])
  stacked = tf.image.random_flip_left_right(stacked)
  stacked = tf.image.rot90(stacked, tf.random.uniform([], 0, 4, dtype=tf.int32))
  return stacked[:, :, :channels], tf.cast(stacked[:, :, channels], tf.int32)


CACHE_LIMIT_IMAGES = 20000


def count_fits_in_cache(data_dir: str, split: str) -> bool:
  """Small splits are decoded once and kept in memory; large ones stream from disk."""
  layout, items = find_split(data_dir, split)
  return layout == "folders" and len(items) <= CACHE_LIMIT_IMAGES


def crops_per_image(height: int, width: int, crop_size: int) -> int:
  """Random crops an image gives per epoch: about one per crop-sized area, so an epoch sees each pixel about once."""
  return max(1, math.floor(height * width / (crop_size * crop_size) + 0.5))


def crops_per_epoch(data_dir: str, split: str, crop_size: int) -> int | None:
  """Total random crops of one epoch, from the image headers; None for TFRecord splits (one crop per record)."""
  layout, items = find_split(data_dir, split)
  if layout != "folders":
    return None
  return sum(crops_per_image(*image_info(image_path)[:2], crop_size) for image_path, _ in items)


def pixel_weights(class_weights: Sequence[float]) -> Any:
  """A 256-entry lookup from mask value to loss weight: the class weights, 0 for ignore (255) and unknown ids."""
  table = np.zeros(256, np.float32)
  table[: len(class_weights)] = np.asarray(class_weights, np.float32)
  return tf.constant(table)


def training_dataset(
  data_dir: str,
  split: str = "train",
  batch_size: int = 16,
  crop_size: int = 128,
  scale_range: tuple[float, float] = (0.75, 1.25),
  seed: int | None = None,
  channels: int = 3,
  dtype: str = "uint8",
  class_weights: Sequence[float] | None = None,
  min_steps: int = 1,
) -> tuple[Any, int]:
  """Endless shuffled, augmented, batched crops; returns (dataset, steps per epoch).

  Each image gives ``crops_per_image`` random crops per epoch (new positions
  every epoch), so a few large scenes train as well as many small tiles.
  With ``class_weights`` the dataset yields (images, masks, per-pixel
  weights) for Keras' ``sample_weight``.
  """
  if count_fits_in_cache(data_dir, split):
    # Cache the decoded split first, then shuffle all of it afresh every epoch.
    dataset, count = load_split(data_dir, split, channels=channels, dtype=dtype)
    dataset = dataset.cache().shuffle(count, seed=seed, reshuffle_each_iteration=True)
  else:
    dataset, count = load_split(data_dir, split, shuffle=True, seed=seed, channels=channels, dtype=dtype)
    dataset = dataset.shuffle(1000, seed=seed, reshuffle_each_iteration=True)
  crops = crops_per_epoch(data_dir, split, crop_size)
  if crops is None:  # TFRecord shards: one crop per record, already counted by load_split
    crops = count
  if crops > count:
    dataset = dataset.flat_map(
      lambda image, mask: tf.data.Dataset.from_tensors((image, mask)).repeat(
        tf.maximum(
          tf.constant(1, tf.int64), tf.cast(tf.floor(tf.cast(tf.size(mask), tf.float64) / crop_size**2 + 0.5), tf.int64)
        )
      )
    )
  dataset = dataset.repeat()
  dataset = dataset.map(
    lambda image, mask: augment(image, mask, crop_size, scale_range), num_parallel_calls=tf.data.AUTOTUNE
  )
  if class_weights is not None:
    table = pixel_weights(class_weights)
    dataset = dataset.map(
      lambda image, mask: (image, mask, tf.gather(table, mask)), num_parallel_calls=tf.data.AUTOTUNE
    )
  dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  # A few large scenes give few crops: an epoch is still at least ``min_steps`` batches.
  return dataset, max(1, min_steps, crops // batch_size)


def evaluation_dataset(data_dir: str, split: str, channels: int = 3, dtype: str = "uint8") -> tuple[Any, int]:
  """Un-augmented (float32 image, mask) pairs one at a time (images may differ in size); returns (dataset, count)."""
  dataset, count = load_split(data_dir, split, channels=channels, dtype=dtype)
  return dataset.map(lambda image, mask: (tf.cast(image, tf.float32), mask)).prefetch(tf.data.AUTOTUNE), count
