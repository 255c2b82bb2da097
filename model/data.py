"""tf.data input for segmentation in the two conventional on-disk layouts.

1. Folders: DIR/<split>/images/<stem>.png|jpg and DIR/<split>/masks/<stem>.png
   (single-channel class ids, 255 = ignore), paired by file stem.
2. TFRecord shards: DIR/<split>/shards/*.tfrecord (or DIR/<split>*.tfrecord) of
   tf.train.Example with `image/encoded` and `image/segmentation/class/encoded`.

Images come out as float32 RGB in [0, 255] (the model normalises itself) and
masks as int32 [H, W].
"""
import glob
import os

import tensorflow as tf

from model.classes import IGNORE_LABEL

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _folder_pairs(split_dir):
    image_dir, mask_dir = os.path.join(split_dir, "images"), os.path.join(split_dir, "masks")
    images = {}
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


def find_split(data_dir, split):
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


def _decode(image_bytes, mask_bytes):
    # Kept uint8 here so a cached split costs a quarter of the memory; callers cast to float32.
    image = tf.ensure_shape(tf.io.decode_image(image_bytes, channels=3, expand_animations=False), [None, None, 3])
    mask = tf.io.decode_png(mask_bytes, channels=1)
    return image, tf.cast(mask[:, :, 0], tf.int32)


def _read_pair(image_path, mask_path):
    return _decode(tf.io.read_file(image_path), tf.io.read_file(mask_path))


_EXAMPLE_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/segmentation/class/encoded": tf.io.FixedLenFeature([], tf.string),
}


def _parse_example(serialized):
    features = tf.io.parse_single_example(serialized, _EXAMPLE_FEATURES)
    return _decode(features["image/encoded"], features["image/segmentation/class/encoded"])


def load_split(data_dir, split, shuffle=False, seed=None):
    """Decoded (uint8 image, int32 mask) pairs of one split, decoded in parallel, in file order unless shuffled."""
    layout, items = find_split(data_dir, split)
    if layout == "folders":
        image_paths, mask_paths = zip(*items)
        dataset = tf.data.Dataset.from_tensor_slices((list(image_paths), list(mask_paths)))
        if shuffle:
            dataset = dataset.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
        return dataset.map(_read_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle), len(items)
    files = tf.data.Dataset.from_tensor_slices(items)
    if shuffle:
        files = files.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    dataset = files.interleave(tf.data.TFRecordDataset, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle)
    count = sum(1 for _ in tf.data.TFRecordDataset(items))
    return dataset.map(_parse_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle), count


def augment(image, mask, crop_size, scale_range=(0.75, 1.25)):
    """Random scale, pad (mask with ignore), crop to crop_size, flips and 90-degree turns.

    Aerial tiles have no up direction, so vertical flips and rotations are fair game.
    """
    image = tf.cast(image, tf.float32)
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
    stacked = tf.image.random_crop(stacked, [crop_size, crop_size, 4])
    stacked = tf.image.random_flip_left_right(stacked)
    stacked = tf.image.rot90(stacked, tf.random.uniform([], 0, 4, dtype=tf.int32))
    return stacked[:, :, :3], tf.cast(stacked[:, :, 3], tf.int32)


CACHE_LIMIT_IMAGES = 20000


def count_fits_in_cache(data_dir, split):
    """Small splits are decoded once and kept in memory; large ones stream from disk."""
    layout, items = find_split(data_dir, split)
    return layout == "folders" and len(items) <= CACHE_LIMIT_IMAGES


def training_dataset(data_dir, split="train", batch_size=16, crop_size=128, scale_range=(0.75, 1.25), seed=None):
    """Shuffled, augmented, batched and prefetched; returns (dataset, steps per epoch)."""
    if count_fits_in_cache(data_dir, split):
        # Cache the decoded split first, then shuffle all of it afresh every epoch.
        dataset, count = load_split(data_dir, split)
        dataset = dataset.cache().shuffle(count, seed=seed, reshuffle_each_iteration=True)
    else:
        dataset, count = load_split(data_dir, split, shuffle=True, seed=seed)
        dataset = dataset.shuffle(1000, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(lambda image, mask: augment(image, mask, crop_size, scale_range), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    steps = count // batch_size
    if steps == 0:
        raise ValueError(f"{count} training images is fewer than one batch of {batch_size}")
    return dataset, steps


def evaluation_dataset(data_dir, split):
    """Un-augmented (image, mask) pairs one at a time (images may differ in size); returns (dataset, count)."""
    dataset, count = load_split(data_dir, split)
    return dataset.map(lambda image, mask: (tf.cast(image, tf.float32), mask)).prefetch(tf.data.AUTOTUNE), count
