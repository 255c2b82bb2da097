"""A real labelled scene: the fluorescence nuclei image shipped inside the stardist wheel.

    python -m model.nuclei_data --out data/nuclei_scene
    python -m model.make_splits --scenes data/nuclei_scene --regions 4x4 --val 0.125 --test 0.25 --seed 0 --out data/nuclei
    python -m model.check_data data/nuclei

stardist 0.9.2 (BSD-3-Clause, pinned in requirements.lock) bundles
``stardist/data/images/img2d.tif``, a 512x512 16-bit fluorescence microscopy
image, and ``mask2d.tif``, its hand-made nucleus instance labels. They are
real, offline, licensed for reuse and small, and they exercise exactly what
users bring: 16-bit single-band data with a narrow value range (0..~235), one
large labelled scene rather than many images. The package is installed
without its dependencies (it needs TensorFlow extras we do not want), so it
is never imported: the files are located through its distribution metadata.

Writes OUT/images/nuclei.tif (the image unchanged), OUT/masks/nuclei.png
(instances -> 0 background, 1 nucleus), OUT/classes.json and OUT/SOURCE.json
(where the data came from, checksums, and the conversion).
"""

import argparse
import hashlib
import importlib.metadata
import os
import sys
from typing import Any, cast

import numpy as np
import tifffile
from PIL import Image

from model.data.classes import classes_from_json, write_classes_file
from model.json_file import write_json_file

PACKAGE = "stardist"
VERSION = "0.9.2"
IMAGE_IN_WHEEL = "stardist/data/images/img2d.tif"
LABELS_IN_WHEEL = "stardist/data/images/mask2d.tif"
CLASSES = classes_from_json(
  [{"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "nucleus", "color": [230, 60, 60]}]
)
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={VERSION}"


class NucleiDataError(RuntimeError):
  """The stardist files are not available; the message says how to install them."""


def source_files() -> tuple[importlib.metadata.Distribution, str, str]:
  """(distribution, image path, labels path) inside the installed stardist wheel."""
  try:
    distribution = importlib.metadata.distribution(PACKAGE)
  except importlib.metadata.PackageNotFoundError:
    raise NucleiDataError(
      f"the {PACKAGE} package, which ships the nuclei image, is not installed: run {INSTALL_HINT}"
    ) from None
  # locate_file is typed as a SimplePath; for an installed wheel it is a pathlib.Path
  paths = [
    os.fspath(cast("os.PathLike[str]", distribution.locate_file(relative)))
    for relative in (IMAGE_IN_WHEEL, LABELS_IN_WHEEL)
  ]
  missing = [path for path in paths if not os.path.isfile(path)]
  if missing:
    raise NucleiDataError(
      f"{PACKAGE} {distribution.version} is installed but lacks {', '.join(missing)}; reinstall it with {INSTALL_HINT}"
    )
  return distribution, paths[0], paths[1]


def _sha256(path: str) -> str:
  with open(path, "rb") as handle:
    return hashlib.sha256(handle.read()).hexdigest()


def write_nuclei_scene(out_dir: str) -> dict[str, Any]:
  """Convert the stardist image and instance labels into a one-scene dataset folder; returns SOURCE.json's record."""
  distribution, image_path, labels_path = source_files()
  image = tifffile.imread(image_path)
  labels = tifffile.imread(labels_path)
  if image.ndim != 2 or image.dtype != np.uint16 or labels.shape != image.shape:
    raise NucleiDataError(
      f"{image_path} is {image.dtype} {image.shape} and {labels_path} {labels.shape}; expected 2-D uint16 of one size "
      f"(the files of {PACKAGE} {VERSION}): reinstall with {INSTALL_HINT}"
    )
  os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
  os.makedirs(os.path.join(out_dir, "masks"), exist_ok=True)
  tifffile.imwrite(os.path.join(out_dir, "images", "nuclei.tif"), image, photometric="minisblack")
  semantic = (labels > 0).astype(np.uint8)
  mask = Image.fromarray(semantic, "P")
  mask.putpalette([value for c in CLASSES for value in c.color])
  mask.save(os.path.join(out_dir, "masks", "nuclei.png"))
  write_classes_file(out_dir, CLASSES)
  record: dict[str, Any] = {
    "package": PACKAGE,
    "version": distribution.version,
    # PackageMetadata is typed without get (Python 3.10 stubs); it is an email.message.Message, which has it.
    "license": distribution.metadata.get("License") or "BSD-3-Clause",  # type: ignore[attr-defined]
    "homepage": "https://github.com/stardist/stardist",
    "files": {
      "image": {"path_in_wheel": IMAGE_IN_WHEEL, "sha256": _sha256(image_path)},
      "labels": {"path_in_wheel": LABELS_IN_WHEEL, "sha256": _sha256(labels_path)},
    },
    "conversion": (
      "images/nuclei.tif is img2d.tif unchanged (512x512 uint16, one channel, values "
      f"{int(image.min())}..{int(image.max())}); masks/nuclei.png is mask2d.tif's {len(np.unique(labels)) - 1} "
      "nucleus instances merged into one class: 0 background (label 0), 1 nucleus (any label > 0)"
    ),
    "pixels": {"background": int((semantic == 0).sum()), "nucleus": int((semantic == 1).sum())},
  }
  if distribution.version != VERSION:
    record["note"] = f"converted from {PACKAGE} {distribution.version}; the documented numbers are for {VERSION}"
  write_json_file(os.path.join(out_dir, "SOURCE.json"), record)
  return record


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument(
    "--out", default="data/nuclei_scene", help="folder to write images/, masks/, classes.json, SOURCE.json"
  )
  args = parser.parse_args(argv)
  try:
    record = write_nuclei_scene(args.out)
  except NucleiDataError as exc:
    print(f"nuclei_data: error: {exc}", file=sys.stderr)
    return 1
  print(
    f"wrote {args.out}: 512x512 uint16 nuclei scene, {record['pixels']['nucleus']:,} nucleus pixels ({PACKAGE} {record['version']})"
  )
  return 0
