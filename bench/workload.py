"""The benchmark workload: PNG files made with the project's dataset generator (and JPEG copies).

``model.make_dataset.generate_example`` costs about 1.3 s per 512x512 image on
this machine (Gaussian filters over the whole canvas) and far more at 4096x4096,
so the workload draws a pool of distinct generator examples once and makes
every image a different view of one (one of the 8 flips/rotations plus a
cyclic shift); 4096x4096 images are mosaics of 8x8 such views. Ground-truth
labels are transformed identically and kept beside the images. Everything is a
pure function of (seed, sizes, counts) and is cached on disk.
"""

import functools
import json
import os
import shutil

import numpy as np
from PIL import Image

from model.data.make_dataset import generate_example


@functools.lru_cache(maxsize=4)
def _pool(rng_seed: int, pool_size: int, size: int):
  images, labels = [], []
  for index in range(pool_size):
    image, label = generate_example(np.random.default_rng([rng_seed, index]), size)
    images.append(image)
    labels.append(label.astype(np.uint8))
  return images, labels


def _view(image, label, rng, size):
  """One of 8 dihedral transforms of a pool example plus a cyclic shift."""
  k, flip = int(rng.integers(4)), bool(rng.integers(2))
  shift = tuple(int(s) for s in rng.integers(0, size, size=2))
  out = []
  for array in (image, label):
    array = np.rot90(array, k)
    if flip:
      array = array[:, ::-1]
    out.append(np.ascontiguousarray(np.roll(array, shift, axis=(0, 1))))
  return out


def _write(folder, name, image, label):
  Image.fromarray(image).save(os.path.join(folder, "images", name), compress_level=1)
  Image.fromarray(label).save(os.path.join(folder, "labels", name), compress_level=1)


def make_set(folder: str, count: int, size: int, pool_size: int = 24, tile: int = 512, seed: int = 6) -> str:
  """``count`` PNGs of ``size``x``size`` in ``folder/images`` (labels in ``folder/labels``); cached."""
  spec = {"count": count, "size": size, "pool_size": pool_size, "tile": tile, "seed": seed, "format": 1}
  marker = os.path.join(folder, "workload.json")
  if os.path.exists(marker):
    with open(marker) as handle:
      if json.load(handle) == spec:
        return os.path.join(folder, "images")
  os.makedirs(os.path.join(folder, "images"), exist_ok=True)
  os.makedirs(os.path.join(folder, "labels"), exist_ok=True)
  piece = min(size, tile)
  images, labels = _pool(seed, pool_size, piece)
  rng = np.random.default_rng([seed, count, size])
  per_side = size // piece
  for index in range(count):
    image = np.empty((size, size, 3), np.uint8)
    label = np.empty((size, size), np.uint8)
    for row in range(per_side):
      for col in range(per_side):
        choice = int(rng.integers(pool_size))
        view_image, view_label = _view(images[choice], labels[choice], rng, piece)
        image[row * piece : (row + 1) * piece, col * piece : (col + 1) * piece] = view_image
        label[row * piece : (row + 1) * piece, col * piece : (col + 1) * piece] = view_label
    _write(folder, f"img{index:05d}.png", image, label)
  with open(marker, "w") as handle:
    json.dump(spec, handle)
  return os.path.join(folder, "images")


def jpeg_set(png_dir: str, count: int, folder: str, quality: int = 90) -> str:
  """The first ``count`` PNGs of ``png_dir`` as JPEGs in ``folder/images`` (what cameras and users mostly hand in); cached."""
  spec = {"source": os.path.abspath(png_dir), "count": count, "quality": quality, "format": 1}
  marker = os.path.join(folder, "workload.json")
  target = os.path.join(folder, "images")
  if os.path.exists(marker):
    with open(marker) as handle:
      if json.load(handle) == spec:
        return target
  shutil.rmtree(folder, ignore_errors=True)
  os.makedirs(target)
  for name in sorted(os.listdir(png_dir))[:count]:
    with Image.open(os.path.join(png_dir, name)) as image:
      image.convert("RGB").save(os.path.join(target, os.path.splitext(name)[0] + ".jpg"), quality=quality)
  with open(marker, "w") as handle:
    json.dump(spec, handle)
  return target


def subset(images_dir: str, count: int, folder: str) -> str:
  """A folder of symlinks to the first ``count`` images of ``images_dir`` (workloads of several sizes share files)."""
  target = os.path.join(folder, "images")
  if os.path.isdir(target) and len(os.listdir(target)) == count:
    return target
  shutil.rmtree(folder, ignore_errors=True)
  os.makedirs(target)
  for name in sorted(os.listdir(images_dir))[:count]:
    os.symlink(os.path.join(images_dir, name), os.path.join(target, name))
  return target
