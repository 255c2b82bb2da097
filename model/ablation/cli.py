"""Does bilinear initialisation of the deconvolutions matter? The upsampling ablation, with seeds and intervals.

    python -m model.ablation --out runs/ablation --figures docs/img

One command, resumable, bounded. The grid is upsampling {bilinear (learned),
bilinear_frozen, random, resize} x variant {fcn32s, fcn8s} x seeds on the
texture mosaics, plus a small-data regime (10 % of the training images, the
same number of steps) for FCN-8s. Every cell trains in this process with
model.train's recipe (same model builder, optimizer, learning-rate schedule,
loss and augmented input), records the validation mean IoU after every epoch,
and is scored on a fresh test set (another generator seed): final-epoch test
mean IoU and a checkerboard measure of the predicted probability maps. Each
finished cell is one JSON file under OUT/cells/, written atomically, so an
interrupted run resumes where it stopped and a second invocation re-runs
nothing. After every cell the table (OUT/ablation.md, OUT/ablation.json) is
rewritten; the figures are drawn at the end (or alone with --report_only).

The data is generated under OUT/data/ if absent (model.make_dataset, seed 1
for train/val, seed 2 for test), so the command needs nothing else.

With --data DIR the grid is the decoder comparison on your own dataset
instead, each cell trained by model.train at its defaults
(model.ablation_own_data):

    python -m model.ablation --data data/nuclei --variants fcn8s fcn2s --seeds 0 1 2 --out runs/nuclei_decoders
"""

# This module is the command: its flags and the resumable loop over the cells (the docstring above is --help).
# The rest is split by job: the grid, its data and a cell's files (model.ablation.grid); training and scoring one
# cell (model.ablation.cell, the only part that needs TensorFlow); the checkerboard measure and the statistics
# (model.ablation.stats); the tables and figures (model.ablation.report).

import argparse
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from model.ablation.grid import (
  NETWORK_STRIDE,
  UPSAMPLINGS,
  cell_settings,
  load_arrays,
  load_cached,
  plan_cells,
  prepare_data,
  write_json,
)
from model.ablation.report import write_report
from model.data.classes import CLASSES
from model.network.variants import LAST_STRIDE


def _save_cell(
  cells_dir: str,
  cell: dict[str, Any],
  record: dict[str, Any],
  predicted: np.ndarray,
  example: np.ndarray | None,
) -> None:
  """A finished cell's files: its test masks, the example probabilities (first seed only) and, last, its record."""
  np.savez_compressed(os.path.join(cells_dir, cell["id"] + ".masks.npz"), masks=predicted)
  if example is not None:
    np.savez_compressed(
      os.path.join(cells_dir, cell["id"] + ".npz"),
      probabilities=example.astype(np.float16),
      variant=cell["variant"],
      upsampling=cell["upsampling"],
    )
  write_json(os.path.join(cells_dir, cell["id"] + ".json"), record)


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Run (or resume) the grid; returns {"ran": [...], "cached": [...], "skipped": [...], "figures": [...]}."""
  started = time.monotonic()
  cells_dir = os.path.join(args.out, "cells")
  os.makedirs(cells_dir, exist_ok=True)
  settings = cell_settings(args)
  cells = plan_cells(args)
  records: list[dict[str, Any]] = []
  ran: list[str] = []
  cached: list[str] = []
  skipped: list[str] = []
  pending: list[dict[str, Any]] = []
  for cell in cells:
    record = load_cached(os.path.join(cells_dir, cell["id"] + ".json"), settings)
    if record is not None:
      records.append(record)
      cached.append(cell["id"])
    else:
      pending.append(cell)
  print(f"ablation: {len(cells)} cells, {len(cached)} already finished, {len(pending)} to run", flush=True)
  test_dir = os.path.join(args.out, "data", "mosaic_test")
  if pending and not args.report_only:
    # TensorFlow and Keras only when a cell trains: --report_only and a finished grid start without them.
    from model.ablation.cell import run_cell

    paths = prepare_data(args)
    test_dir = paths["test"]
    val = load_arrays(paths["full"], "val")
    test = load_arrays(paths["test"], "test")
    class_names = [cls.name for cls in CLASSES]
    for number, cell in enumerate(pending, start=1):
      if args.max_minutes is not None and time.monotonic() - started > args.max_minutes * 60:
        skipped = [c["id"] for c in pending[number - 1 :]]
        print(
          f"ablation: --max_minutes {args.max_minutes} used up; {len(skipped)} cells left for the next invocation",
          flush=True,
        )
        break
      record, example, predicted = run_cell(cell, args, paths, val, test, class_names)
      _save_cell(cells_dir, cell, record, predicted, example if cell["seed"] == min(args.seeds) else None)
      records.append(record)
      ran.append(cell["id"])
      print(
        f"ablation: [{number}/{len(pending)}] {cell['id']}: test mean IoU {record['test_mean_iou']:.4f}, "
        f"checkerboard {record['checkerboard']['share']:.4f}, {record['seconds']:.0f} s",
        flush=True,
      )
      write_report(args, records, test_dir, figures=False)
  elif pending:
    skipped = [cell["id"] for cell in pending]
  table, figures = write_report(args, records, test_dir if os.path.isdir(test_dir) else None)
  print(table, flush=True)
  minutes = (time.monotonic() - started) / 60
  print(f"ablation: ran {len(ran)}, cached {len(cached)}, left {len(skipped)}; {minutes:.1f} minutes", flush=True)
  return {"ran": ran, "cached": cached, "skipped": skipped, "figures": figures, "minutes": minutes}


def _add_grid_arguments(parser: argparse.ArgumentParser) -> None:
  """The grid's axes: seeds, decoders, upsamplings and the small-data regime."""
  parser.add_argument(
    "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="initialisation/shuffling seeds (default 0-4)"
  )
  parser.add_argument(
    "--variants",
    nargs="+",
    default=None,
    choices=sorted(LAST_STRIDE),
    help="decoders (default fcn32s fcn8s; with --data, fcn8s fcn4s fcn2s)",
  )
  parser.add_argument("--upsampling", nargs="+", default=list(UPSAMPLINGS), choices=UPSAMPLINGS)
  parser.add_argument(
    "--small_variants",
    nargs="+",
    default=["fcn8s"],
    choices=sorted(LAST_STRIDE),
    help="variants also run in the small-data regime",
  )
  parser.add_argument(
    "--small_fraction",
    type=float,
    default=0.1,
    help="share of the training images in the small-data regime (0: no such regime)",
  )


def _add_mosaic_arguments(parser: argparse.ArgumentParser) -> None:
  """The generated mosaics' size and counts."""
  parser.add_argument("--image_size", type=int, default=96, help="image and crop size (a multiple of 32)")
  parser.add_argument("--train_images", type=int, default=640)
  parser.add_argument("--val_images", type=int, default=48)
  parser.add_argument("--test_images", type=int, default=100)


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
  """Every cell's training recipe and network width."""
  parser.add_argument("--epochs", type=int, default=12)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--learning_rate", type=float, default=2e-3)
  parser.add_argument("--warmup_epochs", type=int, default=1)
  parser.add_argument("--weight_decay", type=float, default=1e-4)
  parser.add_argument("--encoder", default="compact")
  parser.add_argument(
    "--width",
    type=int,
    default=16,
    help="compact encoder first-stage width (16: 0.31 M parameters, about 2x faster than the default model's 32)",
  )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
  """Which cells run now, the time bound, and report-only."""
  parser.add_argument("--only", nargs="*", help="run just these cells, e.g. full_fcn8s_resize_seed0")
  parser.add_argument(
    "--max_minutes", type=float, default=90, help="start no new cell after this many minutes (rerun to resume)"
  )
  parser.add_argument(
    "--report_only", action="store_true", help="train nothing: table and figures from the finished cells"
  )


def _add_own_data_arguments(parser: argparse.ArgumentParser) -> None:
  """--data and its companions, in their own help group (model.ablation_own_data)."""
  own = parser.add_argument_group(
    "your own dataset (model.ablation_own_data)",
    "With --data, each cell is model.train at its defaults on DIR (one --variants entry, one seed), scored on "
    "DIR's test split; the mosaic-only flags above (--upsampling, --image_size, ...) do not apply.",
  )
  own.add_argument("--data", default=None, help="a dataset directory (model.check_data's layout)")
  own.add_argument("--split", default="test", help="split of --data the cells are scored on (default test)")
  own.add_argument(
    "--train_args",
    default="",
    help='extra model.train flags for every cell, e.g. "--epochs 10" (default: none, model.train\'s defaults)',
  )


def _check_mosaic_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Usage errors for mosaic-grid settings that cannot run or cannot be measured."""
  if args.image_size % NETWORK_STRIDE:
    parser.error(
      f"--image_size must be a multiple of {NETWORK_STRIDE} (the checkerboard is measured over whole periods)"
    )
  if args.epochs <= args.warmup_epochs:
    parser.error("--epochs must exceed --warmup_epochs (the rate warms up, then decays)")
  if min(args.train_images, args.val_images, args.test_images, args.batch_size) < 1:
    parser.error("--train_images, --val_images, --test_images and --batch_size must be positive")
  if not 0 <= args.small_fraction < 1:
    parser.error("--small_fraction must be in [0, 1)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  # prog: the name `python -m model.ablation` printed while the command was model/ablation.py (now the package's
  # __main__.py, which argparse would print), so that --help stays as it was.
  parser = argparse.ArgumentParser(
    prog="ablation.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--out", default="runs/ablation", help="cells, data, table (default runs/ablation)")
  parser.add_argument("--figures", default=None, help="folder for the PNG figures (default: --out)")
  _add_grid_arguments(parser)
  _add_mosaic_arguments(parser)
  _add_training_arguments(parser)
  _add_run_arguments(parser)
  _add_own_data_arguments(parser)
  args = parser.parse_args(argv)
  if args.variants is None:
    args.variants = ["fcn8s", "fcn4s", "fcn2s"] if args.data is not None else ["fcn32s", "fcn8s"]
  if args.data is not None:
    if not os.path.isdir(args.data):
      parser.error(f"--data {args.data}: no such directory")
    return args
  _check_mosaic_arguments(parser, args)
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  if args.data is not None:
    from model.ablation.own_data import run as run_own_data

    return run_own_data(args)
  return run(args)
