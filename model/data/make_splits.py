"""Split large labelled scenes by region into train/val/test, so no test pixel is seen in training.

    python -m model.make_splits --scenes data/nuclei_scene --regions 4x4 --val 0.125 --test 0.25 --seed 0 --out data/nuclei
    python -m model.make_splits --image slide.tif --mask slide_mask.png [--image ... --mask ...] --classes background,tumour --regions 3x3 --out data/slides

Users often label one large scene (a slide, an orthophoto) rather than many
images. Random crops of one scene for both training and testing would test on
pixels the model trained on, so each scene is cut into a grid of --regions
RxC blocks and whole blocks are assigned to splits (at least one per split
asked for, the rest to train; deterministic for a --seed). Every block is
written as its own image, at the scene's bit depth and bands (TIFF for 16-bit
or multi-band scenes, PNG otherwise), with a palette mask PNG, into
OUT/<split>/images|masks/<scene>_r<row>_c<col>.<ext>. OUT/classes.json is the
scenes' class list and OUT/splits.json records which block went where, with
its pixel box, so an evaluation on held-out pixels can be audited.
"""

import argparse
import os
import shutil
import sys
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import tifffile
from PIL import Image

from model.data.classes import CLASSES_FILE, IGNORE_LABEL, SegmentationClass, dataset_classes, write_classes_file
from model.data.image_io import IMAGE_EXTENSIONS, read_image, read_mask
from model.json_file import write_json_file

SPLITS = ("train", "val", "test")
OUTPUTS = SPLITS + ("splits.json", CLASSES_FILE)


class SplitError(ValueError):
  """Scenes or options that cannot be split; the message says what to change."""


def parse_regions(text: str) -> tuple[int, int]:
  """'4x4' -> (4, 4)."""
  try:
    rows, cols = (int(part) for part in text.lower().split("x"))
  except ValueError:
    raise SplitError(f"--regions {text!r} must be ROWSxCOLS, e.g. 4x4") from None
  if rows < 1 or cols < 1 or rows * cols < 2:
    raise SplitError(f"--regions {text!r} must give at least 2 blocks (e.g. 4x4)")
  return rows, cols


def block_edges(size: int, count: int) -> list[int]:
  """count + 1 pixel edges that cut size into count near-equal, disjoint, covering blocks."""
  return [index * size // count for index in range(count + 1)]


def assign_blocks(
  rows: int, cols: int, val: float, test: float, seed: int, scene_name: str
) -> dict[tuple[int, int], str]:
  """{(row, col): split}: at least one block for each split with a fraction > 0, train gets the rest.

  The random order is seeded by (seed, scene name), so a scene's assignment
  does not change when other scenes are added.
  """
  total = rows * cols
  counts = {
    split: (max(1, round(fraction * total)) if fraction > 0 else 0)
    for split, fraction in (("test", test), ("val", val))
  }
  if counts["test"] + counts["val"] >= total:
    raise SplitError(
      f"{rows}x{cols} = {total} blocks cannot hold {counts['val']} val + {counts['test']} test blocks and "
      "still leave one for train; use a finer --regions or smaller --val/--test"
    )
  order = np.random.default_rng([seed, zlib.crc32(scene_name.encode())]).permutation(total)
  labels = ["test"] * counts["test"] + ["val"] * counts["val"]
  labels += ["train"] * (total - len(labels))
  return {(int(index) // cols, int(index) % cols): split for index, split in zip(order, labels)}


def _write_image(path_stem: str, block: np.ndarray) -> str:
  """TIFF (tifffile, zlib) for 16-bit or other than 1/3 bands, PNG otherwise; returns the path written."""
  channels = block.shape[2]
  if block.dtype == np.uint16 or channels not in (1, 3):
    path = path_stem + ".tif"
    photometric = "rgb" if channels == 3 else "minisblack"
    data = block[:, :, 0] if channels == 1 else block
    tifffile.imwrite(
      path, data, photometric=photometric, planarconfig="contig" if channels > 1 else None, compression="zlib"
    )
  else:
    path = path_stem + ".png"
    Image.fromarray(block[:, :, 0] if channels == 1 else block).save(path)
  return path


def _write_mask(path: str, block: np.ndarray, classes: Sequence[SegmentationClass]) -> None:
  """A palette PNG: the indices are the class ids, the palette draws them in the class colours."""
  palette = [255] * (3 * 256)
  for segmentation_class in classes:
    palette[3 * segmentation_class.id : 3 * segmentation_class.id + 3] = segmentation_class.color
  image = Image.fromarray(block, "P")
  image.putpalette(palette)
  image.save(path)


def scenes_in_folder(scenes_dir: str) -> list[tuple[str, str]]:
  """[(image, mask)] from DIR/images/<stem>.<ext> and DIR/masks/<stem>.png."""
  image_dir, mask_dir = os.path.join(scenes_dir, "images"), os.path.join(scenes_dir, "masks")
  if not os.path.isdir(image_dir):
    raise SplitError(
      f"--scenes {scenes_dir} has no images/ folder; put each scene in images/ and its mask in masks/<same stem>.png"
    )
  pairs, missing = [], []
  for filename in sorted(os.listdir(image_dir)):
    stem, extension = os.path.splitext(filename)
    if extension.lower() not in IMAGE_EXTENSIONS:
      continue
    mask = os.path.join(mask_dir, stem + ".png")
    if os.path.exists(mask):
      pairs.append((os.path.join(image_dir, filename), mask))
    else:
      missing.append(f"{os.path.join(image_dir, filename)} has no mask {mask}")
  if missing:
    raise SplitError("; ".join(missing))
  if not pairs:
    raise SplitError(f"{image_dir} holds no scene images ({', '.join(IMAGE_EXTENSIONS)})")
  return pairs


def _classes_for(
  scenes_dir: str | None, pairs: Sequence[tuple[str, str]], names: str | None
) -> tuple[SegmentationClass, ...]:
  """The class list from the scene folder's classes.json (or next to the first image) and/or --classes."""
  candidates = [scenes_dir] if scenes_dir else []
  if pairs:
    image_dir = os.path.dirname(os.path.abspath(pairs[0][0]))
    candidates += [image_dir, os.path.dirname(image_dir)]
  for folder in candidates:
    if os.path.exists(os.path.join(folder, CLASSES_FILE)):
      return dataset_classes(folder, names)
  return dataset_classes(candidates[0], names)


def _prepare_out(out_dir: str, overwrite: bool) -> None:
  """Refuse an --out that already holds a split, classes.json or splits.json, or remove them with --overwrite."""
  present = [name for name in OUTPUTS if os.path.exists(os.path.join(out_dir, name))]
  if present and not overwrite:
    raise SplitError(
      f"{out_dir} already holds {', '.join(present)}; choose a new --out or pass --overwrite to replace them"
    )
  for name in present:
    path = os.path.join(out_dir, name)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


class _Scene(NamedTuple):
  """A scene read and checked: its name (the block files' prefix), its files, its pixels and class ids."""

  name: str
  image_path: str
  mask_path: str
  image: np.ndarray
  mask: np.ndarray


def _load_scenes(
  pairs: Sequence[tuple[str, str]], rows: int, cols: int, classes: Sequence[SegmentationClass]
) -> list[_Scene]:
  """Every scene read and checked (unique names, mask size, room for the grid, class ids) before anything is written."""
  names = [os.path.splitext(os.path.basename(image))[0] for image, _ in pairs]
  duplicates = sorted({name for name in names if names.count(name) > 1})
  if duplicates:
    raise SplitError(
      f"scene names must be unique (block files are named after them): {', '.join(duplicates)} appear twice"
    )
  loaded = []
  for (image_path, mask_path), name in zip(pairs, names):
    image = read_image(image_path)
    mask = read_mask(mask_path, classes=classes)
    if mask.shape != image.shape[:2]:
      raise SplitError(
        f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} but {image_path} is {image.shape[1]}x{image.shape[0]} "
        "(width x height); a mask must have its scene's size"
      )
    if image.shape[0] < rows or image.shape[1] < cols:
      raise SplitError(f"{image_path} is {image.shape[1]}x{image.shape[0]}, too small for {rows}x{cols} regions")
    bad = sorted(set(np.unique(mask).tolist()) - set(range(len(classes))) - {IGNORE_LABEL})
    if bad:
      raise SplitError(
        f"{mask_path} has class ids {bad}, but the class list has 0..{len(classes) - 1}; fix the mask or add the class"
      )
    loaded.append(_Scene(name, image_path, mask_path, image, mask))
  return loaded


def _write_scene(
  out_dir: str,
  scene: _Scene,
  regions: tuple[int, int],
  assignment: dict[tuple[int, int], str],
  classes: Sequence[SegmentationClass],
  block_counts: dict[str, int],
) -> dict[str, Any]:
  """Write one scene's blocks into their splits' folders, counting them; returns the scene's splits.json entry."""
  rows, cols = regions
  image, mask = scene.image, scene.mask
  digits = (len(str(rows - 1)), len(str(cols - 1)))
  y_edges, x_edges = block_edges(image.shape[0], rows), block_edges(image.shape[1], cols)
  blocks = []
  for row in range(rows):
    for col in range(cols):
      split = assignment[(row, col)]
      y0, y1, x0, x1 = y_edges[row], y_edges[row + 1], x_edges[col], x_edges[col + 1]
      stem = f"{scene.name}_r{row:0{digits[0]}d}_c{col:0{digits[1]}d}"
      written = _write_image(os.path.join(out_dir, split, "images", stem), image[y0:y1, x0:x1])
      mask_file = os.path.join(out_dir, split, "masks", stem + ".png")
      _write_mask(mask_file, mask[y0:y1, x0:x1], classes)
      blocks.append(
        {
          "row": row,
          "col": col,
          "split": split,
          "box": [y0, x0, y1, x1],
          "image": os.path.relpath(written, out_dir),
          "mask": os.path.relpath(mask_file, out_dir),
        }
      )
      block_counts[split] += 1
  return {
    "name": scene.name,
    "image": os.path.abspath(scene.image_path),
    "mask": os.path.abspath(scene.mask_path),
    "height": image.shape[0],
    "width": image.shape[1],
    "channels": image.shape[2],
    "dtype": image.dtype.name,
    "blocks": blocks,
  }


def split_scenes(
  pairs: Sequence[tuple[str, str]],
  out_dir: str,
  regions: tuple[int, int],
  val: float,
  test: float,
  seed: int,
  classes: Sequence[SegmentationClass],
  overwrite: bool = False,
) -> dict[str, Any]:
  """Cut every (image, mask) scene into blocks, write them per split, and return the splits.json record."""
  rows, cols = regions
  if not (0 <= val < 1 and 0 <= test < 1):
    raise SplitError("--val and --test are fractions of the blocks, between 0 and 1")
  loaded = _load_scenes(pairs, rows, cols, classes)
  _prepare_out(out_dir, overwrite)
  for split in SPLITS:
    for sub in ("images", "masks"):
      os.makedirs(os.path.join(out_dir, split, sub), exist_ok=True)
  write_classes_file(out_dir, classes)
  block_counts = {split: 0 for split in SPLITS}
  scenes = []
  for scene in loaded:
    assignment = assign_blocks(rows, cols, val, test, seed, scene.name)
    scenes.append(_write_scene(out_dir, scene, regions, assignment, classes, block_counts))
  record = {
    "generator": "python -m model.make_splits",
    "regions": [rows, cols],
    "val": val,
    "test": test,
    "seed": seed,
    "box": "[y0, x0, y1, x1] in scene pixels, end exclusive",
    "blocks": block_counts,
    "scenes": scenes,
  }
  for split in SPLITS:
    if block_counts[split] == 0:
      shutil.rmtree(os.path.join(out_dir, split))
  write_json_file(os.path.join(out_dir, "splits.json"), record, indent=1)
  return record


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--regions", required=True, help="grid of blocks per scene, ROWSxCOLS (e.g. 4x4)")
  parser.add_argument("--scenes", default=None, help="folder with images/<scene>.<ext> and masks/<scene>.png")
  parser.add_argument(
    "--image", action="append", default=[], help="a scene image (repeatable, paired in order with --mask)"
  )
  parser.add_argument("--mask", action="append", default=[], help="the mask PNG of the matching --image")
  parser.add_argument(
    "--classes", default=None, help="comma-separated class names when no classes.json sits with the scenes"
  )
  parser.add_argument("--val", type=float, default=0.125, help="fraction of each scene's blocks for validation")
  parser.add_argument("--test", type=float, default=0.25, help="fraction of each scene's blocks for testing")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", required=True, help="dataset directory to write")
  parser.add_argument(
    "--overwrite", action="store_true", help="replace the splits, classes.json and splits.json already in --out"
  )
  args = parser.parse_args(argv)
  try:
    if bool(args.scenes) == bool(args.image):
      raise SplitError("give either --scenes DIR or one or more --image/--mask pairs")
    if len(args.image) != len(args.mask):
      raise SplitError(f"{len(args.image)} --image but {len(args.mask)} --mask; give one --mask after each --image")
    pairs = scenes_in_folder(args.scenes) if args.scenes else list(zip(args.image, args.mask))
    classes = _classes_for(args.scenes, pairs, args.classes)
    record = split_scenes(
      pairs, args.out, parse_regions(args.regions), args.val, args.test, args.seed, classes, args.overwrite
    )
  except (ValueError, OSError) as exc:  # SplitError, ClassesError, Image/MaskFormatError, unreadable files
    print(f"make_splits: error: {exc}", file=sys.stderr)
    return 1
  counts = ", ".join(f"{split} {count}" for split, count in record["blocks"].items())
  print(
    f"{len(record['scenes'])} scene(s) cut into {record['regions'][0]}x{record['regions'][1]} blocks: {counts}; wrote {args.out}"
  )
  return 0
