"""Generate the texture-mosaic land-cover dataset.

Real public-domain texture photographs shipped inside scikit-image (brick,
grass, gravel) plus synthesized water and asphalt are cut into random aerial
layouts -- irregular blobs, thick polyline roads, blocky buildings -- so the
ground truth is exact and the task still needs texture, not colour, to solve.
Every image is a pure function of (seed, split, index).

    python -m model.make_dataset --out data/mosaic --seed 1 --train 1200 --val 100 --test 0 --size 128
"""

import argparse
import functools
import io
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from model.data.classes import CLASSES, classes_to_json, write_classes_file

SPLITS = ("train", "val", "test")
WATER, VEGETATION, BARE_GROUND, BUILDING, ROAD = range(5)

# Mean RGB reflectance of each class before the per-image random tint.
BASE_TINTS = {
  WATER: (0.22, 0.36, 0.50),
  VEGETATION: (0.34, 0.50, 0.24),
  BARE_GROUND: (0.56, 0.48, 0.38),
  BUILDING: (0.60, 0.40, 0.34),
  ROAD: (0.44, 0.44, 0.46),
}


@functools.lru_cache(maxsize=1)
def load_textures() -> dict[str, np.ndarray]:
  """The scikit-image photographs as float32 in [0, 1], normalised to zero mean, unit std."""
  import skimage.data

  textures: dict[str, np.ndarray] = {}
  for name in ("brick", "grass", "gravel"):
    grey = getattr(skimage.data, name)().astype(np.float32)
    textures[name] = (grey - grey.mean()) / grey.std()
  return textures


def _standardise(field: np.ndarray) -> np.ndarray:
  return (field - field.mean()) / (field.std() + 1e-6)


def _photo_patch(
  rng: np.random.Generator, source: np.ndarray, size: int, scale_range: tuple[float, float]
) -> np.ndarray:
  """A randomly rotated, scaled and shifted view of a texture photograph (mirror-tiled).

  scale_range is in source pixels per output pixel: it sets how many bricks or
  stones a building or field of a few dozen pixels shows.
  """
  angle = rng.uniform(0, 2 * np.pi)
  scale = rng.uniform(*scale_range)
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
  centre = np.array([size / 2.0, size / 2.0])
  target = rng.uniform(0, source.shape[0], size=2)
  offset = target - rotation @ centre
  return ndimage.affine_transform(source, rotation, offset=offset, output_shape=(size, size), order=1, mode="mirror")


def _water(rng: np.random.Generator, size: int) -> np.ndarray:
  """Water: smooth filtered noise with directional ripples."""
  smooth = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=rng.uniform(4, 8))
  angle = rng.uniform(0, np.pi)
  rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
  phase = (rows * np.cos(angle) + cols * np.sin(angle)) * 2 * np.pi / rng.uniform(5, 9)
  warp = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=6) * 40
  ripples = np.sin(phase + warp)
  return 0.5 * _standardise(smooth) + 0.5 * ripples


def _asphalt(rng: np.random.Generator, size: int) -> np.ndarray:
  """Asphalt: fine-grained low-contrast noise with a few dark stains."""
  grain = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=0.6)
  stains = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=10)
  return 0.8 * _standardise(grain) + 0.5 * _standardise(stains)


def class_texture(rng: np.random.Generator, class_id: int, size: int) -> np.ndarray:
  """Zero-mean grey texture for one class, about unit contrast."""
  textures = load_textures()
  if class_id == WATER:
    field = _water(rng, size)
  elif class_id == VEGETATION:
    field = _photo_patch(rng, textures["grass"], size, (0.8, 1.4))
  elif class_id == BARE_GROUND:
    field = _photo_patch(rng, textures["gravel"], size, (0.8, 1.4))
  elif class_id == BUILDING:
    field = _photo_patch(rng, textures["brick"], size, (1.6, 2.6))
  elif class_id == ROAD:
    field = _asphalt(rng, size)
  else:
    raise ValueError(f"unknown class id {class_id}")
  return _standardise(field).astype(np.float32)


def _blob(rng: np.random.Generator, size: int) -> np.ndarray:
  """An irregular blob: a smooth random field thresholded at a random quantile."""
  field = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma=size * rng.uniform(0.08, 0.16), mode="wrap")
  return field > np.quantile(field, rng.uniform(0.6, 0.85))


def _edge_point(rng: np.random.Generator, size: int) -> tuple[float, float]:
  side = rng.integers(4)
  position = rng.uniform(0, size)
  return [(0.0, position), (size - 1.0, position), (position, 0.0), (position, size - 1.0)][side]


def _road(rng: np.random.Generator, size: int) -> np.ndarray:
  """A thick polyline from one image edge to another through one or two interior bends."""
  points: list[tuple[float, ...]] = [_edge_point(rng, size)]
  points += [tuple(rng.uniform(0.15 * size, 0.85 * size, size=2)) for _ in range(rng.integers(1, 3))]
  points.append(_edge_point(rng, size))
  half_width = size * rng.uniform(0.045, 0.075)
  rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
  mask = np.zeros((size, size), dtype=bool)
  for (row0, col0), (row1, col1) in zip(points[:-1], points[1:]):
    direction = np.array([row1 - row0, col1 - col0])
    length_squared = max(float(direction @ direction), 1e-6)
    t = np.clip(((rows - row0) * direction[0] + (cols - col0) * direction[1]) / length_squared, 0, 1)
    distance = np.hypot(rows - (row0 + t * direction[0]), cols - (col0 + t * direction[1]))
    mask |= distance <= half_width
  return mask


def _building(rng: np.random.Generator, size: int) -> np.ndarray:
  """A rotated rectangle, sometimes with a second wing (an L shape)."""
  from skimage.draw import polygon

  mask = np.zeros((size, size), dtype=bool)
  angle = rng.choice([0.0, rng.uniform(0, np.pi / 2)])
  centre = rng.uniform(0.1 * size, 0.9 * size, size=2)
  for _ in range(1 + int(rng.random() < 0.4)):
    height, width = rng.uniform(0.12, 0.3, size=2) * size
    corners = np.array([[-height, -width], [-height, width], [height, width], [height, -width]]) / 2
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = corners @ rotation.T + centre
    rows, cols = polygon(corners[:, 0], corners[:, 1], shape=(size, size))
    mask[rows, cols] = True
    centre = corners[rng.integers(4)]
  return mask


def generate_layout(rng: np.random.Generator, size: int) -> np.ndarray:
  """Label map: a background land cover, blobs, then roads, then buildings on top."""
  labels = np.full((size, size), rng.choice([VEGETATION, BARE_GROUND], p=[0.6, 0.4]), dtype=np.uint8)
  for _ in range(rng.integers(1, 4)):
    labels[_blob(rng, size)] = rng.choice([WATER, VEGETATION, BARE_GROUND], p=[0.45, 0.25, 0.3])
  for _ in range(rng.integers(0, 3)):
    labels[_road(rng, size)] = ROAD
  for _ in range(rng.integers(0, 5)):
    labels[_building(rng, size)] = BUILDING
  return labels


def render(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
  """Paint each class's texture, with a random tint, contrast and brightness per image."""
  size = labels.shape[0]
  image: np.ndarray = np.zeros((size, size, 3), dtype=np.float32)
  brightness = rng.uniform(0.75, 1.25)
  for class_id in np.unique(labels):
    tint = np.array(BASE_TINTS[int(class_id)]) * rng.uniform(0.75, 1.25, size=3)
    contrast = rng.uniform(0.12, 0.25)
    shade = np.clip(1.0 + contrast * class_texture(rng, int(class_id), size), 0.0, 2.0)
    region = labels == class_id
    image[region] = shade[region][:, None] * tint[None, :]
  image = image * brightness + rng.normal(scale=0.015, size=image.shape)
  return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def generate_example(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
  """One (image uint8 [size, size, 3], mask uint8 [size, size]) pair from a numpy Generator.

  Reusable for sample images and benchmarks: pass np.random.default_rng(seed).
  """
  if size < 16:
    raise ValueError(f"size must be at least 16 pixels, got {size}")
  labels = generate_layout(rng, size)
  return render(rng, labels), labels


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator for one image: independent of how many other images are made."""
  return np.random.default_rng([seed, SPLITS.index(split), index])


def _png_bytes(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _tfrecord_example(image_png: bytes, mask_png: bytes, key: str, size: int) -> bytes:
  import tensorflow as tf

  def _bytes(value: bytes) -> Any:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  def _int(value: int) -> Any:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

  features = {
    "image/encoded": _bytes(image_png),
    "image/format": _bytes(b"png"),
    "image/filename": _bytes(key.encode()),
    "image/height": _int(size),
    "image/width": _int(size),
    "image/segmentation/class/encoded": _bytes(mask_png),
    "image/segmentation/class/format": _bytes(b"png"),
  }
  return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_split(
  out_dir: str,
  split: str,
  count: int,
  seed: int,
  size: int,
  write_png: bool = True,
  write_tfrecord: bool = False,
  shard_size: int = 256,
) -> np.ndarray:
  """Write one split; returns the per-class pixel counts."""
  pixel_counts = np.zeros(len(CLASSES), dtype=np.int64)
  if count == 0:
    return pixel_counts
  split_dir = os.path.join(out_dir, split)
  if write_png:
    os.makedirs(os.path.join(split_dir, "images"), exist_ok=True)
    os.makedirs(os.path.join(split_dir, "masks"), exist_ok=True)
  writer: Any = None  # a tf.io.TFRecordWriter from the first example on
  num_shards = (count + shard_size - 1) // shard_size
  if write_tfrecord:
    import tensorflow as tf

    os.makedirs(os.path.join(split_dir, "shards"), exist_ok=True)
  for index in range(count):
    image, mask = generate_example(example_rng(seed, split, index), size)
    pixel_counts += np.bincount(mask.ravel(), minlength=len(CLASSES))[: len(CLASSES)]
    key = f"{split}_{index:05d}"
    image_png, mask_png = _png_bytes(image), _png_bytes(mask)
    if write_png:
      with open(os.path.join(split_dir, "images", key + ".png"), "wb") as handle:
        handle.write(image_png)
      with open(os.path.join(split_dir, "masks", key + ".png"), "wb") as handle:
        handle.write(mask_png)
    if write_tfrecord:
      if index % shard_size == 0:
        if writer is not None:
          writer.close()
        shard_path = os.path.join(
          split_dir, "shards", f"{split}-{index // shard_size:05d}-of-{num_shards:05d}.tfrecord"
        )
        writer = tf.io.TFRecordWriter(shard_path)
      writer.write(_tfrecord_example(image_png, mask_png, key, size))
  if writer is not None:
    writer.close()
  return pixel_counts


def make_dataset(
  out_dir: str,
  seed: int,
  counts: Mapping[str, int],
  size: int,
  write_png: bool = True,
  write_tfrecord: bool = False,
  shard_size: int = 256,
) -> dict[str, Any]:
  """Write all splits, DIR/classes.json and DIR/dataset.json; returns the description written."""
  if not write_png and not write_tfrecord:
    raise ValueError("nothing to write: enable PNG folders, TFRecord shards or both")
  os.makedirs(out_dir, exist_ok=True)
  description: dict[str, Any] = {
    "name": "texture-mosaic",
    "generator": "python -m model.make_dataset",
    "seed": seed,
    "image_size": size,
    "ignore_label": 255,
    "classes": classes_to_json(),
    "layouts": {"png": write_png, "tfrecord": write_tfrecord},
    "splits": {},
  }
  for split in SPLITS:
    pixel_counts = write_split(out_dir, split, counts[split], seed, size, write_png, write_tfrecord, shard_size)
    description["splits"][split] = {
      "images": counts[split],
      "pixel_counts": {cls.name: int(pixel_counts[cls.id]) for cls in CLASSES},
    }
  write_classes_file(out_dir, CLASSES)
  with open(os.path.join(out_dir, "dataset.json"), "w") as handle:
    json.dump(description, handle, indent=2)
  return description


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--seed", type=int, required=True, help="dataset seed; use a different one for a fresh test set")
  parser.add_argument("--train", type=int, default=1000, help="number of training images")
  parser.add_argument("--val", type=int, default=100, help="number of validation images")
  parser.add_argument("--test", type=int, default=100, help="number of test images")
  parser.add_argument("--size", type=int, default=128, help="image height and width in pixels")
  parser.add_argument("--tfrecord", action="store_true", help="also write TFRecord shards to DIR/<split>/shards/")
  parser.add_argument("--tfrecord_only", action="store_true", help="write TFRecord shards and no PNG folders")
  parser.add_argument("--shard_size", type=int, default=256, help="examples per TFRecord shard")
  args = parser.parse_args(argv)
  for name in ("train", "val", "test"):
    if getattr(args, name) < 0:
      raise ValueError(f"--{name} must be >= 0")
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  description = make_dataset(
    args.out,
    args.seed,
    {"train": args.train, "val": args.val, "test": args.test},
    args.size,
    write_png=not args.tfrecord_only,
    write_tfrecord=args.tfrecord or args.tfrecord_only,
    shard_size=args.shard_size,
  )
  json.dump({split: info["images"] for split, info in description["splits"].items()}, sys.stdout)
  print()
