"""Train an FCN on a segmentation dataset.

    python -m model.train --data data/mosaic --out runs/default --variant fcn8s --epochs 30

The data folder declares its classes in DIR/classes.json (or --classes
a,b,c) and is checked first (model.check_data: masks present, sizes, ids,
bands and bit depth). The network takes the data's own bands and bit depth
and normalises them per band with the training split's mean and standard
deviation. Writes into --out: last.keras (every epoch, for --resume),
best.keras (best validation mean IoU), metrics.jsonl + metrics.csv (one row
per epoch) and run.json (settings, data check, input description, classes
and class weights, read by export). The learning rate warms up linearly then
follows a cosine decay, because a fixed 1e-3 was unstable on this task; the
best checkpoint is kept regardless.
"""

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from model.data import classes as classes_module
from model.data.check_data import DataError, check_dataset, format_report
from model.data.classes import SegmentationClass
from model.data.data import training_dataset
from model.network.encoders import ENCODERS
from model.network.fcn import NORMALIZATION, UPSAMPLING, VARIANTS, build_fcn
from model.training.train_validation import EpochEvaluation

NORMALIZATIONS = ("dataset", "fixed")
# --normalization fixed: the whole integer range to [-1, 1], the same for every band.
FIXED_NORMALIZATION: dict[str, dict[str, float]] = {
  "uint8": dict(NORMALIZATION),
  "uint16": {"scale": 1.0 / 32767.5, "offset": -1.0},
}
MIN_BAND_STD = 1.0  # one intensity level: a (nearly) constant band is never amplified beyond that


def read_dataset_description(data_dir: str) -> dict[str, Any]:
  """dataset.json written by model.make_dataset (generator, seed, sizes), or just the folder's name."""
  path = os.path.join(data_dir, "dataset.json")
  if os.path.exists(path):
    with open(path) as handle:
      return json.load(handle)
  return {"name": os.path.basename(os.path.normpath(data_dir))}


def input_normalization(kind: str, data_report: dict[str, Any]) -> dict[str, Any]:
  """The card's normalisation: per-band mean/std of the training split, or the fixed range mapping."""
  if kind == "fixed":
    return dict(FIXED_NORMALIZATION[data_report["dtype"]])
  stats = data_report["band_stats"]
  return {"mean": [float(v) for v in stats["mean"]], "std": [max(float(v), MIN_BAND_STD) for v in stats["std"]]}


def class_weights(spec: str | None, class_pixels: Sequence[int], class_names: Sequence[str]) -> list[float] | None:
  """Loss weight per class from --class_weights: none, median_frequency or an explicit list.

  median_frequency is SegNet's balancing (Badrinarayanan et al. 2017):
  weight_c = median(freq) / freq_c, with freq_c the class's share of all
  labelled training pixels; classes absent from training keep weight 1.
  """
  if spec in (None, "none"):
    return None
  if spec == "median_frequency":
    pixels = np.asarray(class_pixels, np.float64)
    present = pixels > 0
    frequency = pixels / pixels.sum()
    balanced = np.ones(len(pixels))
    balanced[present] = np.median(frequency[present]) / frequency[present]
    return [round(float(w), 6) for w in balanced]
  weights: list[float]
  try:
    weights = [float(part) for part in spec.split(",")]
  except ValueError:
    weights = []
  if len(weights) != len(class_names) or any(not np.isfinite(w) or w < 0 for w in weights):
    raise ValueError(
      f"--class_weights {spec!r} must be none, median_frequency or {len(class_names)} non-negative numbers "
      f"(one per class: {','.join(class_names)})"
    )
  return weights


def learning_rate_schedule(learning_rate: float, total_steps: int, warmup_steps: int) -> Any:
  """Linear warm-up from lr/10 to lr, then cosine decay to zero by the last step."""
  if total_steps <= warmup_steps:
    raise ValueError(f"training has {total_steps} steps, not more than the {warmup_steps} warm-up steps")
  return keras.optimizers.schedules.CosineDecay(
    initial_learning_rate=learning_rate / 10,
    decay_steps=total_steps - warmup_steps,
    warmup_target=learning_rate,
    warmup_steps=warmup_steps,
  )


def build_model(
  args: argparse.Namespace,
  num_classes: int,
  steps_per_epoch: int,
  channels: int = 3,
  normalization: dict[str, Any] | None = None,
) -> Any:
  model = build_fcn(
    num_classes,
    variant=args.variant,
    encoder=args.encoder,
    upsampling=args.upsampling,
    encoder_weights=args.encoder_weights,
    width=args.width,
    channels=channels,
    normalization=normalization,
  )
  schedule = learning_rate_schedule(
    args.learning_rate, args.epochs * steps_per_epoch, args.warmup_epochs * steps_per_epoch
  )
  model.compile(
    optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=args.weight_decay),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=classes_module.IGNORE_LABEL),
    jit_compile=False,  # XLA is about 2x slower than a plain tf.function on these CPUs
  )
  return model


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
  """The dataset, its class list, how its bands are normalised and how its classes are weighted."""
  parser.add_argument(
    "--data", required=True, help="dataset directory (folders or TFRecord shards per split, classes.json)"
  )
  parser.add_argument(
    "--classes",
    default=None,
    help="comma-separated class names for ids 0..n-1 (instead of, or checked against, DIR/classes.json)",
  )
  parser.add_argument(
    "--normalization",
    choices=NORMALIZATIONS,
    default="dataset",
    help="dataset: per-band mean/std of the training split (default); fixed: the dtype's whole range to [-1, 1]",
  )
  parser.add_argument(
    "--class_weights",
    default="none",
    help="loss weight per class: none (default), median_frequency (SegNet balancing) or one number per class, e.g. 1,4",
  )


def _add_network_arguments(parser: argparse.ArgumentParser) -> None:
  """The network: decoder, encoder and upsampling."""
  parser.add_argument(
    "--variant",
    choices=VARIANTS,
    default="fcn2s",
    help="decoder (default fcn2s: score fusion down to stride 2, the best quality per cost on the mosaics and the "
    "nuclei walkthrough; docs/MODEL.md, Decoders)",
  )
  parser.add_argument("--encoder", choices=ENCODERS, default="compact")
  parser.add_argument("--encoder_weights", default=None, help="local weights file for a keras.applications encoder")
  parser.add_argument("--width", type=int, default=32, help="channel width of the compact encoder's first stage")
  parser.add_argument(
    "--upsampling",
    choices=UPSAMPLING,
    default="bilinear",
    help="bilinear (default: best in the seeded ablation, docs/MODEL.md), bilinear_frozen, random or resize",
  )


def _add_optimisation_arguments(parser: argparse.ArgumentParser) -> None:
  """Crops, batches, epochs and the learning-rate schedule."""
  parser.add_argument("--image_size", type=int, default=128, help="training crop size in pixels")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--epochs", type=int, default=30)
  parser.add_argument(
    "--min_steps_per_epoch",
    type=int,
    default=50,
    help="an epoch is one random crop per crop-sized area of every training image, but at least this many batches "
    "(so a few large scenes still train between validations)",
  )
  parser.add_argument("--learning_rate", type=float, default=2e-3, help="peak learning rate after warm-up")
  parser.add_argument("--warmup_epochs", type=int, default=1)
  parser.add_argument("--weight_decay", type=float, default=1e-4)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
  """Validation split, seed, resuming, time budget and verbosity."""
  parser.add_argument("--val_split", default="val")
  parser.add_argument("--seed", type=int, default=0, help="weights initialisation and shuffling seed")
  parser.add_argument("--resume", action="store_true", help="continue from --out/last.keras")
  parser.add_argument("--time_budget_minutes", type=float, default=None, help="stop after the epoch that exceeds it")
  parser.add_argument(
    "--verbose", type=int, choices=(0, 1, 2), default=1, help="Keras fit verbosity (1 = progress bar)"
  )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  _add_data_arguments(parser)
  parser.add_argument("--out", required=True, help="run directory for checkpoints and logs")
  _add_network_arguments(parser)
  _add_optimisation_arguments(parser)
  _add_run_arguments(parser)
  args = parser.parse_args(argv)
  if args.epochs < 1 or args.batch_size < 1 or args.image_size < 1:
    raise ValueError("--epochs, --batch_size and --image_size must be positive")
  return args


def _checked_data(args: argparse.Namespace) -> tuple[tuple[SegmentationClass, ...], dict[str, Any]]:
  """The dataset's classes and its check report (printed); a missing validation split is a DataError."""
  class_list = classes_module.dataset_classes(args.data, args.classes)
  data_report = check_dataset(args.data, class_list, splits=["train", args.val_split])
  if args.val_split in data_report.get("missing_splits", []):
    raise DataError(
      args.data,
      [
        f"no '{args.val_split}' split to validate on: add {args.val_split}/images + masks "
        "(python -m model.make_splits cuts scenes into splits) or pass --val_split"
      ],
    )
  print(format_report(data_report), flush=True)
  return class_list, data_report


def _resumed_model(args: argparse.Namespace, steps_per_epoch: int) -> tuple[Any, int, float]:
  """--resume: last.keras with a schedule rebuilt for --epochs; returns (model, epochs done, best val mean IoU)."""
  last_path, state_path = os.path.join(args.out, "last.keras"), os.path.join(args.out, "state.json")
  if not (os.path.exists(last_path) and os.path.exists(state_path)):
    raise ValueError(f"--resume needs {last_path} and {state_path} from an earlier run")
  model = keras.models.load_model(last_path)
  # The optimizer's step count is restored; rebuilding the schedule for --epochs lets a
  # resumed run also be extended instead of continuing at the old schedule's final rate.
  model.optimizer.learning_rate = learning_rate_schedule(
    args.learning_rate, args.epochs * steps_per_epoch, args.warmup_epochs * steps_per_epoch
  )
  with open(state_path) as handle:
    state = json.load(handle)
  initial_epoch, best_mean_iou = state["epoch"], state["best_val_mean_iou"]
  print(f"resuming after epoch {initial_epoch} (best val mean IoU {best_mean_iou:.4f})", flush=True)
  return model, initial_epoch, best_mean_iou


def _remove_stale_logs(out_dir: str) -> None:
  """A fresh run starts its metrics logs and state anew."""
  for stale in ("metrics.jsonl", "metrics.csv", "state.json"):
    if os.path.exists(os.path.join(out_dir, stale)):
      os.remove(os.path.join(out_dir, stale))


def _write_run_json(args: argparse.Namespace, command: str, fresh_run: dict[str, Any]) -> None:
  """run.json: a resumed run keeps its description and records the new command; otherwise ``fresh_run``."""
  run_path = os.path.join(args.out, "run.json")
  if args.resume and os.path.exists(run_path):
    with open(run_path) as handle:
      run = json.load(handle)
    run["settings"]["epochs"] = args.epochs
    run.setdefault("resumed_commands", []).append(command)
  else:
    run = fresh_run
  with open(run_path, "w") as handle:
    json.dump(run, handle, indent=2)


def train(args: argparse.Namespace, command: str | None = None) -> dict[str, Any]:
  """Run training; returns the run directory's state (epochs done, best validation mean IoU)."""
  os.makedirs(args.out, exist_ok=True)
  keras.utils.set_random_seed(args.seed)
  description = read_dataset_description(args.data)
  class_list, data_report = _checked_data(args)
  class_names = [segmentation_class.name for segmentation_class in class_list]
  weights = class_weights(args.class_weights, data_report["splits"]["train"]["class_pixels"], class_names)
  channels, dtype = data_report["channels"], data_report["dtype"]
  dataset, steps_per_epoch = training_dataset(
    args.data,
    "train",
    args.batch_size,
    args.image_size,
    seed=args.seed,
    channels=channels,
    dtype=dtype,
    class_weights=weights,
    min_steps=args.min_steps_per_epoch,
  )
  input_description = {
    "dtype": dtype,
    "channels": channels,
    "normalization": input_normalization(args.normalization, data_report),
  }

  if args.resume:
    model, initial_epoch, best_mean_iou = _resumed_model(args, steps_per_epoch)
  else:
    initial_epoch, best_mean_iou = 0, -1.0
    _remove_stale_logs(args.out)
    model = build_model(args, len(class_list), steps_per_epoch, channels, input_description["normalization"])

  command = command or " ".join(["python -m model.train"] + [shlex.quote(part) for part in sys.argv[1:]])
  fresh_run = make_run_description(
    args, command, model, steps_per_epoch, description, class_list, data_report, input_description, weights
  )
  _write_run_json(args, command, fresh_run)

  evaluation = EpochEvaluation(
    args.data,
    args.val_split,
    args.out,
    class_names,
    best_mean_iou=best_mean_iou,
    time_budget_seconds=None if args.time_budget_minutes is None else args.time_budget_minutes * 60,
    dtype=dtype,
  )
  if initial_epoch < args.epochs:
    model.fit(
      dataset,
      epochs=args.epochs,
      steps_per_epoch=steps_per_epoch,
      initial_epoch=initial_epoch,
      callbacks=[evaluation],
      verbose=args.verbose,
      shuffle=False,
    )
  with open(os.path.join(args.out, "state.json")) as handle:
    return json.load(handle)


def make_run_description(
  args: argparse.Namespace,
  command: str,
  model: Any,
  steps_per_epoch: int,
  description: dict[str, Any],
  class_list: Sequence[SegmentationClass],
  data_report: dict[str, Any],
  input_description: dict[str, Any],
  weights: list[float] | None,
) -> dict[str, Any]:
  """What export needs to write the card: command, settings, dataset, input, classes and their weights."""
  dataset = {key: description.get(key) for key in ("name", "generator", "seed", "image_size")}
  dataset["path"] = args.data
  return {
    "command": command,
    "settings": vars(args),
    "parameters": int(model.count_params()),
    "steps_per_epoch": steps_per_epoch,
    "dataset": dataset,
    "train_images": data_report["splits"]["train"]["images"],
    "classes": classes_module.classes_to_json(class_list),
    "input": input_description,
    "class_weights": None if weights is None else dict(zip([c.name for c in class_list], weights)),
    "data_check": data_report,
  }


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  try:
    state = train(args)
  except (classes_module.ClassesError, DataError) as exc:
    # A data problem is the user's to fix: one message, no traceback.
    print(f"model.train: error: {exc}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(state))
