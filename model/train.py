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
import csv
import json
import os
import shlex
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from model import classes as classes_module
from model.check_data import DataError, check_dataset, format_report
from model.data import evaluation_dataset, training_dataset
from model.encoders import ENCODERS
from model.fcn import NORMALIZATION, UPSAMPLING, VARIANTS, build_fcn
from model.metrics import confusion_matrix, segmentation_metrics
from model.tiled import predict_image

NORMALIZATIONS = ("dataset", "fixed")
# --normalization fixed: the whole integer range to [-1, 1], the same for every band.
FIXED_NORMALIZATION = {"uint8": dict(NORMALIZATION), "uint16": {"scale": 1.0 / 32767.5, "offset": -1.0}}
MIN_BAND_STD = 1.0  # one intensity level: a (nearly) constant band is never amplified beyond that


def read_dataset_description(data_dir):
  """dataset.json written by model.make_dataset (generator, seed, sizes), or just the folder's name."""
  path = os.path.join(data_dir, "dataset.json")
  if os.path.exists(path):
    with open(path) as handle:
      return json.load(handle)
  return {"name": os.path.basename(os.path.normpath(data_dir))}


def input_normalization(kind, data_report):
  """The card's normalisation: per-band mean/std of the training split, or the fixed range mapping."""
  if kind == "fixed":
    return dict(FIXED_NORMALIZATION[data_report["dtype"]])
  stats = data_report["band_stats"]
  return {"mean": [float(v) for v in stats["mean"]], "std": [max(float(v), MIN_BAND_STD) for v in stats["std"]]}


def class_weights(spec, class_pixels, class_names):
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
    weights = np.ones(len(pixels))
    weights[present] = np.median(frequency[present]) / frequency[present]
    return [round(float(w), 6) for w in weights]
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


def make_prediction_function(model, with_confidence=False):
  """A traced argmax predictor for one image of any size (no retracing per shape).

  With ``with_confidence`` it returns (class ids, winning-class probability), as the export's signature does.
  """
  channels = int(model.input_shape[-1])

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32)], reduce_retracing=True)
  def predict(images):
    logits = model(images, training=False)
    class_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
    if not with_confidence:
      return class_ids
    return class_ids, tf.reduce_max(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), axis=-1)

  return predict


def evaluate_keras_model(model, data_dir, split, num_classes, class_names, dtype="uint8"):
  """Confusion matrix and metrics of an in-memory Keras model over a whole split, at native size (tiled when large)."""
  predict = make_prediction_function(model)
  dataset, _ = evaluation_dataset(data_dir, split, channels=int(model.input_shape[-1]), dtype=dtype)
  confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
  for image, mask in dataset:
    predicted = predict_image(lambda batch: predict(batch).numpy(), image.numpy())
    confusion += confusion_matrix(mask.numpy(), predicted, num_classes)
  return segmentation_metrics(confusion, class_names), confusion


class EpochEvaluation(keras.callbacks.Callback):
  """Validation mean IoU each epoch, the metrics log, last/best checkpoints and the time budget."""

  def __init__(
    self, data_dir, split, out_dir, class_names, best_mean_iou=-1.0, time_budget_seconds=None, dtype="uint8"
  ):
    super().__init__()
    self.dtype = dtype
    self.data_dir = data_dir
    self.split = split
    self.out_dir = out_dir
    self.class_names = list(class_names)
    self.best_mean_iou = best_mean_iou
    self.time_budget_seconds = time_budget_seconds
    self.started = time.monotonic()
    self.epoch_started = self.started

  def on_epoch_begin(self, epoch, logs=None):
    self.epoch_started = time.monotonic()

  def on_epoch_end(self, epoch, logs=None):
    logs = logs if logs is not None else {}
    metrics, _ = evaluate_keras_model(
      self.model, self.data_dir, self.split, len(self.class_names), self.class_names, self.dtype
    )
    learning_rate = self.model.optimizer.learning_rate
    row = {
      "epoch": epoch + 1,
      "loss": float(logs.get("loss", float("nan"))),
      "learning_rate": float(keras.ops.convert_to_numpy(learning_rate)),
      "val_pixel_accuracy": metrics["pixel_accuracy"],
      "val_mean_accuracy": metrics["mean_accuracy"],
      "val_mean_iou": metrics["mean_iou"],
      "val_fw_iou": metrics["fw_iou"],
      "epoch_seconds": round(time.monotonic() - self.epoch_started, 2),
      "elapsed_seconds": round(time.monotonic() - self.started, 2),
    }
    row.update({f"val_iou_{name}": value for name, value in metrics["per_class_iou"].items()})
    logs["val_mean_iou"] = metrics["mean_iou"]
    improved = metrics["mean_iou"] > self.best_mean_iou
    if improved:
      self.best_mean_iou = metrics["mean_iou"]
      self.model.save(os.path.join(self.out_dir, "best.keras"))
    row["best_val_mean_iou"] = self.best_mean_iou
    self.model.save(os.path.join(self.out_dir, "last.keras"))
    self._append_log(row)
    with open(os.path.join(self.out_dir, "state.json"), "w") as handle:
      json.dump({"epoch": epoch + 1, "best_val_mean_iou": self.best_mean_iou}, handle)
    print(
      f"\nepoch {epoch + 1}: val mean IoU {metrics['mean_iou']:.4f} (best {self.best_mean_iou:.4f}) "
      f"pixel acc {metrics['pixel_accuracy']:.4f} lr {row['learning_rate']:.2e}",
      flush=True,
    )
    if self.time_budget_seconds is not None and time.monotonic() - self.started >= self.time_budget_seconds:
      print(f"time budget of {self.time_budget_seconds / 60:.1f} minutes used up: stopping", flush=True)
      self.model.stop_training = True

  def _append_log(self, row):
    with open(os.path.join(self.out_dir, "metrics.jsonl"), "a") as handle:
      handle.write(json.dumps(row) + "\n")
    csv_path = os.path.join(self.out_dir, "metrics.csv")
    write_header = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as handle:
      writer = csv.DictWriter(handle, fieldnames=list(row))
      if write_header:
        writer.writeheader()
      writer.writerow(row)


def learning_rate_schedule(learning_rate, total_steps, warmup_steps):
  """Linear warm-up from lr/10 to lr, then cosine decay to zero by the last step."""
  if total_steps <= warmup_steps:
    raise ValueError(f"training has {total_steps} steps, not more than the {warmup_steps} warm-up steps")
  return keras.optimizers.schedules.CosineDecay(
    initial_learning_rate=learning_rate / 10,
    decay_steps=total_steps - warmup_steps,
    warmup_target=learning_rate,
    warmup_steps=warmup_steps,
  )


def build_model(args, num_classes, steps_per_epoch, channels=3, normalization=None):
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


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
  parser.add_argument("--out", required=True, help="run directory for checkpoints and logs")
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
  parser.add_argument("--val_split", default="val")
  parser.add_argument("--seed", type=int, default=0, help="weights initialisation and shuffling seed")
  parser.add_argument("--resume", action="store_true", help="continue from --out/last.keras")
  parser.add_argument("--time_budget_minutes", type=float, default=None, help="stop after the epoch that exceeds it")
  parser.add_argument(
    "--verbose", type=int, choices=(0, 1, 2), default=1, help="Keras fit verbosity (1 = progress bar)"
  )
  args = parser.parse_args(argv)
  if args.epochs < 1 or args.batch_size < 1 or args.image_size < 1:
    raise ValueError("--epochs, --batch_size and --image_size must be positive")
  return args


def train(args, command=None):
  """Run training; returns the run directory's state (epochs done, best validation mean IoU)."""
  os.makedirs(args.out, exist_ok=True)
  keras.utils.set_random_seed(args.seed)
  description = read_dataset_description(args.data)
  class_list = classes_module.dataset_classes(args.data, args.classes)
  class_names = [segmentation_class.name for segmentation_class in class_list]
  data_report = check_dataset(args.data, class_list, splits=["train", args.val_split])
  if args.val_split in data_report.get("missing_splits", []):
    raise DataError(
      f"{args.data} has no '{args.val_split}' split to validate on: add {args.val_split}/images + masks (python -m model.make_splits cuts scenes into splits) or pass --val_split"
    )
  print(format_report(data_report), flush=True)
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

  initial_epoch, best_mean_iou = 0, -1.0
  last_path, state_path = os.path.join(args.out, "last.keras"), os.path.join(args.out, "state.json")
  if args.resume:
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
  else:
    for stale in ("metrics.jsonl", "metrics.csv", "state.json"):
      if os.path.exists(os.path.join(args.out, stale)):
        os.remove(os.path.join(args.out, stale))
    model = build_model(args, len(class_list), steps_per_epoch, channels, input_description["normalization"])

  command = command or " ".join(["python -m model.train"] + [shlex.quote(part) for part in sys.argv[1:]])
  run_path = os.path.join(args.out, "run.json")
  if args.resume and os.path.exists(run_path):
    with open(run_path) as handle:
      run = json.load(handle)
    run["settings"]["epochs"] = args.epochs
    run.setdefault("resumed_commands", []).append(command)
  else:
    run = make_run_description(
      args, command, model, steps_per_epoch, description, class_list, data_report, input_description, weights
    )
  with open(run_path, "w") as handle:
    json.dump(run, handle, indent=2)

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
  with open(state_path) as handle:
    return json.load(handle)


def make_run_description(
  args, command, model, steps_per_epoch, description, class_list, data_report, input_description, weights
):
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


def main(argv=None):
  args = parse_args(argv)
  try:
    state = train(args)
  except (classes_module.ClassesError, DataError) as exc:
    # A data problem is the user's to fix: one message, no traceback.
    print(f"model.train: error: {exc}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps(state))


if __name__ == "__main__":
  main()
