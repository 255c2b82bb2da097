"""The upsampling ablation's grid: which cells it has, the settings and data they depend on, and a cell's files.

Kept apart from the training (``model.ablation.cell``) and the report
(``model.ablation.report``) so that planning, resuming and ``--report_only``
need neither TensorFlow nor matplotlib.
"""

import argparse
import json
import os
import shlex
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np

from model.data.image_io import read_image, read_mask
from model.data.make_dataset import make_dataset

UPSAMPLINGS = ("bilinear", "bilinear_frozen", "random", "resize")
REFERENCE = "bilinear"
REGIMES = ("full", "small")
TRAIN_SEED, TEST_SEED = 1, 2
NETWORK_STRIDE = 32
EXAMPLE_INDEX = 0  # the test image whose probability maps are kept for the figure
# Settings that change what a cell computes: a cached cell is reused only if they match.
CELL_SETTINGS = (
  "image_size",
  "train_images",
  "val_images",
  "test_images",
  "small_fraction",
  "epochs",
  "batch_size",
  "learning_rate",
  "warmup_epochs",
  "weight_decay",
  "encoder",
  "width",
)


def cell_id(regime: str, variant: str, upsampling: str, seed: int) -> str:
  return f"{regime}_{variant}_{upsampling}_seed{seed}"


def plan_cells(args: argparse.Namespace) -> list[dict[str, Any]]:
  """Every cell in run order: seeds outermost, so a run cut short still holds complete, paired seeds."""
  cells: list[dict[str, Any]] = []
  for seed in args.seeds:
    for regime in REGIMES:
      variants = args.variants if regime == "full" else ([] if args.small_fraction <= 0 else args.small_variants)
      for variant in variants:
        for upsampling in args.upsampling:
          identifier = cell_id(regime, variant, upsampling, seed)
          if not args.only or identifier in args.only:
            cells.append(
              {"id": identifier, "regime": regime, "variant": variant, "upsampling": upsampling, "seed": seed}
            )
  return cells


def cell_settings(args: argparse.Namespace) -> dict[str, Any]:
  return {name: getattr(args, name) for name in CELL_SETTINGS}


def small_train_images(args: argparse.Namespace) -> int:
  return max(1, round(args.train_images * args.small_fraction))


def cell_command(args: argparse.Namespace, identifier: str) -> str:
  """The command that recomputes exactly this cell (into the same --out, after deleting its JSON)."""
  parts = ["python", "-m", "model.ablation", "--out", args.out]
  for name in CELL_SETTINGS:
    parts += [f"--{name}", str(getattr(args, name))]
  parts += ["--only", identifier]
  return " ".join(shlex.quote(part) for part in parts)


def _dataset_matches(path: str, seed: int, counts: Mapping[str, int], size: int) -> bool:
  try:
    with open(os.path.join(path, "dataset.json")) as handle:
      description = json.load(handle)
  except (OSError, ValueError):
    return False
  return (
    description.get("seed") == seed
    and description.get("image_size") == size
    and {split: info["images"] for split, info in description["splits"].items()} == counts
  )


def ensure_dataset(path: str, seed: int, counts: Mapping[str, int], size: int) -> str:
  """Generate a mosaic set unless the same one (seed, counts, size) is already there; deterministic either way."""
  if _dataset_matches(path, seed, counts, size):
    return path
  if os.path.exists(path):
    shutil.rmtree(path)
  make_dataset(path, seed, counts, size)
  return path


def prepare_data(args: argparse.Namespace) -> dict[str, str]:
  """OUT/data/{mosaic, mosaic_small, mosaic_test}. The small set's images are the first ones of the full set."""
  root = os.path.join(args.out, "data")
  size = args.image_size
  paths = {
    "full": ensure_dataset(
      os.path.join(root, "mosaic"), TRAIN_SEED, {"train": args.train_images, "val": args.val_images, "test": 0}, size
    ),
    "test": ensure_dataset(
      os.path.join(root, "mosaic_test"), TEST_SEED, {"train": 0, "val": 0, "test": args.test_images}, size
    ),
  }
  if args.small_fraction > 0 and any(cell["regime"] == "small" for cell in plan_cells(args)):
    paths["small"] = ensure_dataset(
      os.path.join(root, "mosaic_small"), TRAIN_SEED, {"train": small_train_images(args), "val": 0, "test": 0}, size
    )
  return paths


def load_arrays(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """All images (float32 [N, H, W, 3]) and masks (int32 [N, H, W]) of a split of same-sized images."""
  # model.data imports TensorFlow: only when arrays are loaded, so planning and the table start without it.
  from model.data.data import find_split

  _, pairs = find_split(data_dir, split)
  images = np.stack([read_image(image_path) for image_path, _ in pairs]).astype(np.float32)
  masks = np.stack([read_mask(mask_path) for _, mask_path in pairs]).astype(np.int32)
  return images, masks


def write_json(path: str, value: Any) -> None:
  """Write through a temporary file and rename, so an interrupted run leaves no half-written cell or table."""
  temporary = path + ".tmp"
  with open(temporary, "w") as handle:
    json.dump(value, handle, indent=1)
  os.replace(temporary, path)


def load_cached(path: str, settings: Mapping[str, Any]) -> dict[str, Any] | None:
  """A finished cell's record if it exists and was computed with these settings, else None."""
  try:
    with open(path) as handle:
      record = json.load(handle)
  except (OSError, ValueError):
    return None
  return record if record.get("settings") == settings else None
