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
"""

import argparse
import gc
import json
import math
import os
import shlex
import shutil
import time

import numpy as np

UPSAMPLINGS = ("bilinear", "bilinear_frozen", "random", "resize")
REFERENCE = "bilinear"
REGIMES = ("full", "small")
TRAIN_SEED, TEST_SEED = 1, 2
NETWORK_STRIDE = 32
# Output stride of the last upsampling layer: the period of its checkerboard.
LAST_STRIDE = {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8}
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


def checkerboard_energy(probabilities, period):
  """(periodic energy, total energy) of a map [H, W] or [H, W, C] at one period.

  The periodic part is the map's projection onto images that repeat every
  ``period`` pixels in both directions: the polyphase mean (the average of
  all period x period blocks), tiled. Its energy equals the spectral energy
  at the stride frequency 1/period and its harmonics on both axes (the DFT
  bins at multiples of H/period and W/period, DC excluded). Both energies are
  about the map's mean and summed over channels; the map is cut to whole
  periods from the top-left corner, where the network's grid starts.
  """
  values = np.asarray(probabilities, np.float64)
  if values.ndim == 2:
    values = values[:, :, None]
  rows, cols = (values.shape[0] // period) * period, (values.shape[1] // period) * period
  if rows == 0 or cols == 0:
    raise ValueError(f"a {values.shape[0]}x{values.shape[1]} map holds no whole {period}x{period} period")
  values = values[:rows, :cols]
  centred = values - values.mean(axis=(0, 1), keepdims=True)
  blocks = centred.reshape(rows // period, period, cols // period, period, -1)
  pattern = blocks.mean(axis=(0, 2))
  blocks_count = (rows // period) * (cols // period)
  return float(blocks_count * np.sum(pattern**2)), float(np.sum(centred**2))


def checkerboard_share(probabilities, period):
  """Share of a map's variance that repeats with the given period: 0 for a constant map, 1 for a pure checkerboard.

  A smooth ramp across N pixels gives (period^2 - 1) / (N^2 - 1).
  """
  periodic, total = checkerboard_energy(probabilities, period)
  # A constant map leaves only rounding residue (about 1e-33 per pixel): no pattern at all.
  return periodic / total if total > 1e-20 * np.size(probabilities) else 0.0


def t_interval(values, confidence=0.95):
  """(mean, half-width) of the Student-t interval over seeds; half-width NaN for fewer than two values."""
  from scipy import stats

  values = np.asarray(values, np.float64)
  if values.size == 0:
    return float("nan"), float("nan")
  mean = float(values.mean())
  if values.size < 2:
    return mean, float("nan")
  half = stats.t.ppf(0.5 + confidence / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
  return mean, float(half)


def cell_id(regime, variant, upsampling, seed):
  return f"{regime}_{variant}_{upsampling}_seed{seed}"


def plan_cells(args):
  """Every cell in run order: seeds outermost, so a run cut short still holds complete, paired seeds."""
  cells = []
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


def cell_settings(args):
  return {name: getattr(args, name) for name in CELL_SETTINGS}


def small_train_images(args):
  return max(1, round(args.train_images * args.small_fraction))


def cell_command(args, identifier):
  """The command that recomputes exactly this cell (into the same --out, after deleting its JSON)."""
  parts = ["python", "-m", "model.ablation", "--out", args.out]
  for name in CELL_SETTINGS:
    parts += [f"--{name}", str(getattr(args, name))]
  parts += ["--only", identifier]
  return " ".join(shlex.quote(part) for part in parts)


def _dataset_matches(path, seed, counts, size):
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


def ensure_dataset(path, seed, counts, size):
  """Generate a mosaic set unless the same one (seed, counts, size) is already there; deterministic either way."""
  from model.make_dataset import make_dataset

  if _dataset_matches(path, seed, counts, size):
    return path
  if os.path.exists(path):
    shutil.rmtree(path)
  make_dataset(path, seed, counts, size)
  return path


def prepare_data(args):
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


def load_arrays(data_dir, split):
  """All images (float32 [N, H, W, 3]) and masks (int32 [N, H, W]) of a split of same-sized images."""
  from model.data import find_split
  from model.image_io import read_image, read_mask

  _, pairs = find_split(data_dir, split)
  images = np.stack([read_image(image_path) for image_path, _ in pairs]).astype(np.float32)
  masks = np.stack([read_mask(mask_path) for _, mask_path in pairs]).astype(np.int32)
  return images, masks


class _Scorer:
  """Softmax probabilities of a model over fixed arrays, in batches, through one traced function."""

  def __init__(self, model, batch_size=25):
    import tensorflow as tf

    self.batch_size = batch_size

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], reduce_retracing=True)
    def probabilities(images):
      return tf.nn.softmax(tf.cast(model(images, training=False), tf.float32), axis=-1)

    self.probabilities = probabilities

  def batches(self, images):
    for start in range(0, len(images), self.batch_size):
      yield start, self.probabilities(images[start : start + self.batch_size]).numpy()

  def mean_iou(self, images, masks, num_classes):
    from model.metrics import confusion_matrix, segmentation_metrics

    confusion = np.zeros((num_classes, num_classes), np.int64)
    for start, probabilities in self.batches(images):
      confusion += confusion_matrix(masks[start : start + len(probabilities)], probabilities.argmax(-1), num_classes)
    return segmentation_metrics(confusion)


def run_cell(cell, args, paths, val, test, class_names):
  """Train one cell in this process with model.train's recipe; returns its record."""
  import keras

  from model.data import training_dataset
  from model.metrics import confusion_matrix, segmentation_metrics
  from model.train import build_model

  started = time.monotonic()
  keras.backend.clear_session()
  keras.utils.set_random_seed(cell["seed"])
  data_dir = paths[cell["regime"]]
  # Both regimes take the same number of steps: the small one sees fewer distinct images, not less training.
  steps = max(1, args.train_images // args.batch_size)
  dataset, steps_per_epoch = training_dataset(
    data_dir, "train", args.batch_size, args.image_size, seed=cell["seed"], min_steps=steps
  )
  recipe = argparse.Namespace(
    variant=cell["variant"],
    encoder=args.encoder,
    upsampling=cell["upsampling"],
    encoder_weights=None,
    width=args.width,
    learning_rate=args.learning_rate,
    epochs=args.epochs,
    warmup_epochs=args.warmup_epochs,
    weight_decay=args.weight_decay,
  )
  model = build_model(recipe, len(class_names), steps_per_epoch)
  scorer = _Scorer(model)
  curve = []

  class ValidationCurve(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      metrics = scorer.mean_iou(val[0], val[1], len(class_names))
      curve.append(
        {
          "epoch": epoch + 1,
          "loss": float((logs or {}).get("loss", float("nan"))),
          "val_mean_iou": metrics["mean_iou"],
          "seconds": round(time.monotonic() - started, 2),
        }
      )

  model.fit(
    dataset,
    epochs=args.epochs,
    steps_per_epoch=steps_per_epoch,
    callbacks=[ValidationCurve()],
    verbose=0,
    shuffle=False,
  )
  train_seconds = time.monotonic() - started

  num_classes = len(class_names)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  periods = sorted({LAST_STRIDE[cell["variant"]], NETWORK_STRIDE})
  energy = {period: [0.0, 0.0] for period in periods}
  example = None
  for start, probabilities in scorer.batches(test[0]):
    confusion += confusion_matrix(test[1][start : start + len(probabilities)], probabilities.argmax(-1), num_classes)
    for map_ in probabilities:
      for period in periods:
        periodic, total = checkerboard_energy(map_, period)
        energy[period][0] += periodic
        energy[period][1] += total
    if start <= EXAMPLE_INDEX < start + len(probabilities):
      example = probabilities[EXAMPLE_INDEX - start]
  metrics = segmentation_metrics(confusion, class_names)
  record = {
    "id": cell["id"],
    "regime": cell["regime"],
    "variant": cell["variant"],
    "upsampling": cell["upsampling"],
    "seed": cell["seed"],
    "test_mean_iou": metrics["mean_iou"],
    "test_pixel_accuracy": metrics["pixel_accuracy"],
    "test_per_class_iou": metrics["per_class_iou"],
    "val_curve": curve,
    "checkerboard": {
      "period": LAST_STRIDE[cell["variant"]],
      "share": energy[LAST_STRIDE[cell["variant"]]][0] / max(energy[LAST_STRIDE[cell["variant"]]][1], 1e-30),
      "share_period32": energy[NETWORK_STRIDE][0] / max(energy[NETWORK_STRIDE][1], 1e-30),
    },
    "train_images": small_train_images(args) if cell["regime"] == "small" else args.train_images,
    "steps": steps_per_epoch * args.epochs,
    "parameters": int(model.count_params()),
    "command": cell_command(args, cell["id"]),
    "train_seconds": round(train_seconds, 1),
    "seconds": round(time.monotonic() - started, 1),
    "settings": cell_settings(args),
  }
  keras.backend.clear_session()
  gc.collect()
  return record, example


def _write_json(path, value):
  temporary = path + ".tmp"
  with open(temporary, "w") as handle:
    json.dump(value, handle, indent=1)
  os.replace(temporary, path)


def load_cached(path, settings):
  """A finished cell's record if it exists and was computed with these settings, else None."""
  try:
    with open(path) as handle:
      record = json.load(handle)
  except (OSError, ValueError):
    return None
  return record if record.get("settings") == settings else None


def summarise(records):
  """Per (regime, variant, upsampling): mean +/- 95 % t-interval of test mean IoU, paired difference vs bilinear, checkerboard."""
  groups = {}
  for record in records:
    groups.setdefault((record["regime"], record["variant"]), {}).setdefault(record["upsampling"], {})[
      record["seed"]
    ] = record
  rows = []
  for (regime, variant), by_upsampling in sorted(
    groups.items(), key=lambda item: (REGIMES.index(item[0][0]), item[0][1])
  ):
    reference = by_upsampling.get(REFERENCE, {})
    for upsampling in UPSAMPLINGS:
      seeds = by_upsampling.get(upsampling)
      if not seeds:
        continue
      values = [seeds[seed]["test_mean_iou"] for seed in sorted(seeds)]
      mean, half = t_interval(values)
      row = {
        "regime": regime,
        "variant": variant,
        "upsampling": upsampling,
        "seeds": sorted(seeds),
        "train_images": next(iter(seeds.values()))["train_images"],
        "test_mean_iou": mean,
        "test_mean_iou_ci": half,
        "minutes_per_cell": float(np.mean([seeds[seed]["seconds"] for seed in seeds]) / 60),
      }
      paired = sorted(set(seeds) & set(reference))
      if upsampling != REFERENCE and paired:
        differences = [seeds[seed]["test_mean_iou"] - reference[seed]["test_mean_iou"] for seed in paired]
        row["paired_seeds"] = paired
        row["difference"], row["difference_ci"] = t_interval(differences)
      for key in ("share", "share_period32"):
        row[f"checkerboard_{key}"], row[f"checkerboard_{key}_ci"] = t_interval(
          [seeds[seed]["checkerboard"][key] for seed in seeds]
        )
        if upsampling != REFERENCE and paired:
          row[f"checkerboard_{key}_difference"], row[f"checkerboard_{key}_difference_ci"] = t_interval(
            [seeds[seed]["checkerboard"][key] - reference[seed]["checkerboard"][key] for seed in paired]
          )
      row["checkerboard_period"] = next(iter(seeds.values()))["checkerboard"]["period"]
      final_curves = [[point["val_mean_iou"] for point in seeds[seed]["val_curve"]] for seed in sorted(seeds)]
      row["val_mean_iou_by_epoch"] = (
        np.mean(final_curves, axis=0).tolist() if len({len(c) for c in final_curves}) == 1 else None
      )
      rows.append(row)
  return rows


def _interval(mean, half, digits=4, signed=False):
  sign = "+" if signed else ""
  if math.isnan(half):
    return f"{mean:{sign}.{digits}f} (1 seed)"
  return f"{mean:{sign}.{digits}f} ± {half:.{digits}f}"


def markdown_table(rows):
  """Two tables: test mean IoU with paired differences, then the checkerboard shares with paired differences."""

  def difference(row, key, digits):
    if row["upsampling"] == REFERENCE:
      return "reference"
    if key not in row:
      return "–"
    return _interval(row[key], row[key + "_ci"], digits, signed=True) + f" (n={len(row['paired_seeds'])})"

  lines = [
    "| regime | variant | upsampling | train images | seeds | test mean IoU (95 % CI) | paired difference vs bilinear (95 % CI) | minutes per cell |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for row in rows:
    lines.append(
      f"| {row['regime']} | {row['variant']} | {row['upsampling']} | {row['train_images']} | {len(row['seeds'])} | "
      f"{_interval(row['test_mean_iou'], row['test_mean_iou_ci'])} | {difference(row, 'difference', 4)} | {row['minutes_per_cell']:.2f} |"
    )
  lines += [
    "",
    "| regime | variant | upsampling | checkerboard share at the last stride, x1000 (95 % CI) | paired difference vs bilinear, x1000 | share at period 32, x1000 | paired difference, x1000 |",
    "|---|---|---|---|---|---|---|",
  ]
  for row in rows:
    scaled = {key: value * 1000 if isinstance(value, float) else value for key, value in row.items()}
    lines.append(
      f"| {row['regime']} | {row['variant']} | {row['upsampling']} | "
      f"{_interval(scaled['checkerboard_share'], scaled['checkerboard_share_ci'], 3)} (period {row['checkerboard_period']}) | "
      f"{difference(scaled, 'checkerboard_share_difference', 3)} | "
      f"{_interval(scaled['checkerboard_share_period32'], scaled['checkerboard_share_period32_ci'], 2)} | "
      f"{difference(scaled, 'checkerboard_share_period32_difference', 2)} |"
    )
  return "\n".join(lines)


def _panels(records):
  keys = sorted({(r["regime"], r["variant"]) for r in records}, key=lambda key: (REGIMES.index(key[0]), key[1]))
  return keys


COLOURS = {"bilinear": "tab:blue", "bilinear_frozen": "tab:green", "random": "tab:red", "resize": "tab:gray"}


def draw_figures(records, rows, figures_dir, test_dir=None, examples=None):
  """ablation_miou.png (intervals and paired differences), ablation_curves.png and ablation_checkerboard.png."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker

  os.makedirs(figures_dir, exist_ok=True)
  panels = _panels(records)
  written = []

  figure, axes = plt.subplots(2, len(panels), figsize=(3.6 * len(panels), 6.4), squeeze=False)
  for column, (regime, variant) in enumerate(panels):
    top, bottom = axes[0][column], axes[1][column]
    panel_rows = [row for row in rows if row["regime"] == regime and row["variant"] == variant]
    for position, row in enumerate(panel_rows):
      colour = COLOURS[row["upsampling"]]
      seeds = [
        r["test_mean_iou"]
        for r in records
        if (r["regime"], r["variant"], r["upsampling"]) == (regime, variant, row["upsampling"])
      ]
      top.scatter([position + 0.18] * len(seeds), seeds, s=10, color=colour, alpha=0.6)
      top.errorbar(
        position, row["test_mean_iou"], yerr=np.nan_to_num(row["test_mean_iou_ci"]), fmt="o", color=colour, capsize=4
      )
      if "difference" in row:
        bottom.errorbar(
          position, row["difference"], yerr=np.nan_to_num(row["difference_ci"]), fmt="o", color=colour, capsize=4
        )
    labels = [row["upsampling"].replace("_", "\n") for row in panel_rows]
    for axis in (top, bottom):
      axis.set_xticks(range(len(panel_rows)), labels, fontsize=8)
      axis.set_xlim(-0.5, len(panel_rows) - 0.5)
      axis.grid(axis="y", alpha=0.3)
    bottom.axhline(0, color="tab:blue", linewidth=1)
    train_images = panel_rows[0]["train_images"] if panel_rows else "?"
    top.set_title(f"{variant}, {regime} ({train_images} train images)", fontsize=9)
    if column == 0:
      top.set_ylabel("test mean IoU\n(mean, 95 % CI; dots: seeds)")
      bottom.set_ylabel("paired difference\nvs bilinear learned")
  figure.tight_layout()
  path = os.path.join(figures_dir, "ablation_miou.png")
  figure.savefig(path, dpi=110)
  plt.close(figure)
  written.append(path)

  figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
  for column, (regime, variant) in enumerate(panels):
    axis = axes[0][column]
    for upsampling in UPSAMPLINGS:
      curves = [
        [p["val_mean_iou"] for p in r["val_curve"]]
        for r in records
        if (r["regime"], r["variant"], r["upsampling"]) == (regime, variant, upsampling)
      ]
      if not curves or len({len(curve) for curve in curves}) != 1:
        continue
      curves = np.asarray(curves)
      epochs = np.arange(1, curves.shape[1] + 1)
      means, halves = zip(*(t_interval(curves[:, index]) for index in range(curves.shape[1])))
      means, halves = np.asarray(means), np.nan_to_num(np.asarray(halves))
      axis.plot(epochs, means, color=COLOURS[upsampling], label=f"{upsampling} (n={len(curves)})")
      axis.fill_between(epochs, means - halves, means + halves, color=COLOURS[upsampling], alpha=0.15)
    axis.set_title(f"{variant}, {regime}", fontsize=9)
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    if column == 0:
      axis.set_ylabel("validation mean IoU\n(mean, 95 % CI band)")
    axis.legend(fontsize=7, loc="lower right")
  figure.tight_layout()
  path = os.path.join(figures_dir, "ablation_curves.png")
  figure.savefig(path, dpi=110)
  plt.close(figure)
  written.append(path)

  if examples and test_dir:
    written.append(_draw_examples(plt, examples, records, rows, figures_dir, test_dir))
  return written


def _boundary_window(mask, size):
  """Top-left corner of the size x size window with the most label boundaries (aligned to 8 pixels)."""
  edges = np.zeros(mask.shape, np.int64)
  edges[:, 1:] += mask[:, 1:] != mask[:, :-1]
  edges[1:, :] += mask[1:, :] != mask[:-1, :]
  best, corner = -1, (0, 0)
  for top in range(0, mask.shape[0] - size + 1, 8):
    for left in range(0, mask.shape[1] - size + 1, 8):
      count = edges[top : top + size, left : left + size].sum()
      if count > best:
        best, corner = count, (top, left)
  return corner


def _draw_examples(plt, examples, records, rows, figures_dir, test_dir):
  from model.classes import CLASSES

  images, masks = load_arrays(test_dir, "test")
  image, mask = images[EXAMPLE_INDEX].astype(np.uint8), masks[EXAMPLE_INDEX]
  crop = min(48, mask.shape[0], mask.shape[1])
  top, left = _boundary_window(mask, crop)
  window = (slice(top, top + crop), slice(left, left + crop))
  variants = sorted({key[0] for key in examples})
  shown = [upsampling for upsampling in UPSAMPLINGS if any((variant, upsampling) in examples for variant in variants)]
  palette = np.array([cls.color for cls in CLASSES], np.uint8)
  # One colour scale for every map, so a stronger pattern is a stronger pattern.
  lowest = min(float(probabilities.max(-1)[window].min()) for probabilities in examples.values())
  columns = 2 + len(shown)
  figure, axes = plt.subplots(len(variants), columns, figsize=(2.0 * columns, 2.6 * len(variants) + 0.3), squeeze=False)
  for line, variant in enumerate(variants):
    axes[line][0].imshow(image[window], interpolation="nearest")
    axes[line][0].set_title("input", fontsize=8)
    axes[line][1].imshow(palette[np.minimum(mask[window], len(palette) - 1)], interpolation="nearest")
    axes[line][1].set_title("truth", fontsize=8)
    axes[line][0].set_ylabel(variant)
    for column, upsampling in enumerate(shown, start=2):
      axis = axes[line][column]
      probabilities = examples.get((variant, upsampling))
      if probabilities is None:
        axis.set_visible(False)
        continue
      axis.imshow(probabilities.max(-1)[window], cmap="magma", vmin=lowest, vmax=1.0, interpolation="nearest")
      row = next(
        (r for r in rows if (r["regime"], r["variant"], r["upsampling"]) == ("full", variant, upsampling)), None
      )
      share = f"\ncheckerboard x1000: {1000 * row['checkerboard_share']:.3f}" if row else ""
      axis.set_title(f"{upsampling}{share}", fontsize=8)
    for axis in axes[line]:
      axis.set_xticks([])
      axis.set_yticks([])
  figure.suptitle(
    f"winning-class probability (dark {lowest:.2f} to bright 1), test image {EXAMPLE_INDEX}, {crop}x{crop} crop at "
    f"({top}, {left}), first seed; checkerboard: test-set share over all seeds",
    fontsize=8,
  )
  figure.tight_layout()
  path = os.path.join(figures_dir, "ablation_checkerboard.png")
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path


def load_examples(cells_dir, seed):
  """The kept probability maps of the full regime's cells for one seed: {(variant, upsampling): [H, W, C]}."""
  examples = {}
  for name in sorted(os.listdir(cells_dir)) if os.path.isdir(cells_dir) else []:
    if name.startswith("full_") and name.endswith(f"_seed{seed}.npz"):
      with np.load(os.path.join(cells_dir, name)) as data:
        examples[(str(data["variant"]), str(data["upsampling"]))] = data["probabilities"].astype(np.float32)
  return examples


def write_report(args, records, paths_test, figures=True):
  rows = summarise(records)
  table = markdown_table(rows)
  planned = len(plan_cells(args))
  header = (
    f"{len(records)} of {planned} planned cells finished"
    f" ({args.image_size}x{args.image_size} mosaics, {args.train_images} training images"
    f" (small regime {small_train_images(args)}), {args.val_images} validation, {args.test_images} test;"
    f" {args.epochs} epochs of batch {args.batch_size}).\n\n"
  )
  with open(os.path.join(args.out, "ablation.md"), "w") as handle:
    handle.write(header + table + "\n")
  _write_json(
    os.path.join(args.out, "ablation.json"),
    {"settings": cell_settings(args), "planned_cells": planned, "rows": rows, "cells": records},
  )
  written = []
  if figures and records:
    examples = load_examples(os.path.join(args.out, "cells"), min(args.seeds))
    written = draw_figures(records, rows, args.figures or args.out, paths_test, examples)
  return table, written


def run(args):
  """Run (or resume) the grid; returns {"ran": [...], "cached": [...], "skipped": [...], "figures": [...]}."""
  started = time.monotonic()
  cells_dir = os.path.join(args.out, "cells")
  os.makedirs(cells_dir, exist_ok=True)
  settings = cell_settings(args)
  cells = plan_cells(args)
  records, ran, cached, skipped = [], [], [], []
  pending = []
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
    from model.classes import CLASSES

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
      record, example = run_cell(cell, args, paths, val, test, class_names)
      if example is not None and cell["seed"] == min(args.seeds):
        np.savez_compressed(
          os.path.join(cells_dir, cell["id"] + ".npz"),
          probabilities=example.astype(np.float16),
          variant=cell["variant"],
          upsampling=cell["upsampling"],
        )
      _write_json(os.path.join(cells_dir, cell["id"] + ".json"), record)
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


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="runs/ablation", help="cells, data, table (default runs/ablation)")
  parser.add_argument("--figures", default=None, help="folder for the PNG figures (default: --out)")
  parser.add_argument(
    "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="initialisation/shuffling seeds (default 0-4)"
  )
  parser.add_argument("--variants", nargs="+", default=["fcn32s", "fcn8s"], choices=sorted(LAST_STRIDE))
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
  parser.add_argument("--image_size", type=int, default=96, help="image and crop size (a multiple of 32)")
  parser.add_argument("--train_images", type=int, default=640)
  parser.add_argument("--val_images", type=int, default=48)
  parser.add_argument("--test_images", type=int, default=100)
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
  parser.add_argument("--only", nargs="*", help="run just these cells, e.g. full_fcn8s_resize_seed0")
  parser.add_argument(
    "--max_minutes", type=float, default=90, help="start no new cell after this many minutes (rerun to resume)"
  )
  parser.add_argument(
    "--report_only", action="store_true", help="train nothing: table and figures from the finished cells"
  )
  args = parser.parse_args(argv)
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
  return args


def main(argv=None):
  return run(parse_args(argv))


if __name__ == "__main__":
  main()
