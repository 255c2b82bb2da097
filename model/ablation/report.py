"""The ablation's report: the Markdown tables and ablation.json, and the three figures.

Rewritten after every finished cell (tables only) and at the end (with the
figures), from the cell records alone, so ``--report_only`` redraws
everything without training. matplotlib is imported only when figures are
drawn: the per-cell table rewrite does not need it.
"""

import argparse
import math
import os
from typing import Any

import numpy as np

from model.ablation.grid import (
  EXAMPLE_INDEX,
  REFERENCE,
  REGIMES,
  UPSAMPLINGS,
  cell_settings,
  load_arrays,
  plan_cells,
  small_train_images,
  write_json,
)
from model.ablation.stats import cell_boundary_f1, decoder_rows, summarise, t_interval
from model.data.classes import CLASSES


def interval_text(mean: float, half: float, digits: int = 4, signed: bool = False) -> str:
  sign = "+" if signed else ""
  if math.isnan(half):
    return f"{mean:{sign}.{digits}f} (1 seed)"
  return f"{mean:{sign}.{digits}f} ± {half:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
  """Two tables: test mean IoU with paired differences, then the checkerboard shares with paired differences."""

  def difference(row: dict[str, Any], key: str, digits: int) -> str:
    if row["upsampling"] == REFERENCE:
      return "reference"
    if key not in row:
      return "–"
    return interval_text(row[key], row[key + "_ci"], digits, signed=True) + f" (n={len(row['paired_seeds'])})"

  lines = [
    "| regime | variant | upsampling | train images | seeds | test mean IoU (95 % CI) | paired difference vs bilinear (95 % CI) | minutes per cell |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for row in rows:
    lines.append(
      f"| {row['regime']} | {row['variant']} | {row['upsampling']} | {row['train_images']} | {len(row['seeds'])} | "
      f"{interval_text(row['test_mean_iou'], row['test_mean_iou_ci'])} | {difference(row, 'difference', 4)} | {row['minutes_per_cell']:.2f} |"
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
      f"{interval_text(scaled['checkerboard_share'], scaled['checkerboard_share_ci'], 3)} (period {row['checkerboard_period']}) | "
      f"{difference(scaled, 'checkerboard_share_difference', 3)} | "
      f"{interval_text(scaled['checkerboard_share_period32'], scaled['checkerboard_share_period32_ci'], 2)} | "
      f"{difference(scaled, 'checkerboard_share_period32_difference', 2)} |"
    )
  return "\n".join(lines)


def decoder_table(rows: list[dict[str, Any]]) -> str:
  """The decoder comparison: quality and its paired difference to FCN-8s, then cost."""

  def paired(row: dict[str, Any], key: str, digits: int = 4) -> str:
    if row["variant"] == "fcn8s":
      return "reference"
    if key + "_difference" not in row:
      return "–"
    n = len(row[key + "_paired_seeds"])
    return interval_text(row[key + "_difference"], row[key + "_difference_ci"], digits, signed=True) + f" (n={n})"

  def value(row: dict[str, Any], key: str) -> str:
    return "–" if row.get(key) is None or math.isnan(row[key]) else interval_text(row[key], row[key + "_ci"])

  lines = [
    "| decoder | seeds | test mean IoU (95 % CI) | vs FCN-8s, paired | test boundary F1, 2 px (95 % CI) | vs FCN-8s, paired | parameters | MACs per pixel | minutes per cell |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for row in rows:
    macs = f"{row['macs_per_pixel']:,}" if row.get("macs_per_pixel") else "–"
    lines.append(
      f"| {row['variant']} | {len(row['seeds'])} | {value(row, 'test_mean_iou')} | {paired(row, 'test_mean_iou')} | "
      f"{value(row, 'test_boundary_f1')} | {paired(row, 'test_boundary_f1')} | {row['parameters']:,} | {macs} | "
      f"{row['minutes_per_cell']:.2f} |"
    )
  return "\n".join(lines)


def draw_decoder_figure(rows: list[dict[str, Any]], figures_dir: str) -> str:
  """decoders.png: test mean IoU and boundary F1 per decoder (mean, 95 % interval, the seeds as dots),
  and each one's paired difference to FCN-8s."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = [row["variant"] for row in rows]
  figure, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
  for column, (key, label) in enumerate(
    (("test_mean_iou", "test mean IoU"), ("test_boundary_f1", "boundary F1 (2 px)"))
  ):
    for index, row in enumerate(rows):
      values = list(row.get(key + "_by_seed", {}).values())
      if not values:
        continue
      axes[0, column].errorbar(index, row[key], yerr=row[key + "_ci"], fmt="o", color="tab:blue", capsize=4)
      axes[0, column].scatter([index + 0.15] * len(values), values, s=12, color="tab:blue", alpha=0.6)
      if key + "_difference" in row:
        axes[1, column].errorbar(
          index, row[key + "_difference"], yerr=row[key + "_difference_ci"], fmt="o", color="tab:red", capsize=4
        )
    axes[0, column].set_ylabel(f"{label}\n(mean, 95 % CI; dots: seeds)")
    axes[1, column].axhline(0, color="grey", linewidth=0.8)
    axes[1, column].set_ylabel(f"{label}: paired\ndifference vs fcn8s")
  for axis in axes.ravel():
    axis.grid(axis="y", alpha=0.3)
  for axis in axes[1]:
    axis.set_xticks(range(len(names)), names)
  os.makedirs(figures_dir, exist_ok=True)
  return _save_figure(plt, figure, figures_dir, "ablation_decoders.png")


def _save_figure(plt: Any, figure: Any, figures_dir: str, name: str) -> str:
  """Lays the figure out, writes it as ``figures_dir/name`` at 110 dpi and closes it; returns the path."""
  figure.tight_layout()
  path = os.path.join(figures_dir, name)
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path


def boundary_scores(records: list[dict[str, Any]], cells_dir: str, test_dir: str | None) -> dict[str, float | None]:
  """{cell id: mean BF of its test predictions} for the cells that kept them (``<id>.masks.npz``)."""
  if not test_dir:
    return {}
  kept = [r for r in records if os.path.exists(os.path.join(cells_dir, r["id"] + ".masks.npz"))]
  if not kept:
    return {}
  truth = load_arrays(test_dir, "test")[1]
  scores = {}
  for record in kept:
    with np.load(os.path.join(cells_dir, record["id"] + ".masks.npz")) as saved:
      scores[record["id"]] = cell_boundary_f1(saved["masks"], truth, len(CLASSES))
  return scores


def _panels(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
  keys = sorted({(r["regime"], r["variant"]) for r in records}, key=lambda key: (REGIMES.index(key[0]), key[1]))
  return keys


COLOURS = {"bilinear": "tab:blue", "bilinear_frozen": "tab:green", "random": "tab:red", "resize": "tab:gray"}


def _draw_miou_figure(
  plt: Any, records: list[dict[str, Any]], rows: list[dict[str, Any]], panels: list[tuple[str, str]], figures_dir: str
) -> str:
  """ablation_miou.png: per panel, each upsampling's test mean IoU (interval, seeds) and paired difference."""
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
  return _save_figure(plt, figure, figures_dir, "ablation_miou.png")


def _draw_curves_figure(
  plt: Any, records: list[dict[str, Any]], panels: list[tuple[str, str]], figures_dir: str
) -> str:
  """ablation_curves.png: per panel, each upsampling's validation mean IoU by epoch (mean and interval band)."""
  import matplotlib.ticker

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
      epoch_values = np.asarray(curves)
      epochs = np.arange(1, epoch_values.shape[1] + 1)
      intervals = [t_interval(epoch_values[:, index]) for index in range(epoch_values.shape[1])]
      means = np.asarray([mean for mean, _ in intervals])
      halves = np.nan_to_num(np.asarray([half for _, half in intervals]))
      axis.plot(epochs, means, color=COLOURS[upsampling], label=f"{upsampling} (n={len(epoch_values)})")
      axis.fill_between(epochs, means - halves, means + halves, color=COLOURS[upsampling], alpha=0.15)
    axis.set_title(f"{variant}, {regime}", fontsize=9)
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    if column == 0:
      axis.set_ylabel("validation mean IoU\n(mean, 95 % CI band)")
    axis.legend(fontsize=7, loc="lower right")
  return _save_figure(plt, figure, figures_dir, "ablation_curves.png")


def draw_figures(
  records: list[dict[str, Any]],
  rows: list[dict[str, Any]],
  figures_dir: str,
  test_dir: str | None = None,
  examples: dict[tuple[str, str], np.ndarray] | None = None,
) -> list[str]:
  """ablation_miou.png (intervals and paired differences), ablation_curves.png and ablation_checkerboard.png."""
  # matplotlib only here: the backend is chosen before pyplot is imported, and the table rewrites need neither.
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(figures_dir, exist_ok=True)
  panels = _panels(records)
  written = [_draw_miou_figure(plt, records, rows, panels, figures_dir)]
  written.append(_draw_curves_figure(plt, records, panels, figures_dir))
  if examples and test_dir:
    written.append(_draw_examples(plt, examples, records, rows, figures_dir, test_dir))
  return written


def _boundary_window(mask: np.ndarray, size: int) -> tuple[int, int]:
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


def _draw_examples(
  plt: Any,
  examples: dict[tuple[str, str], np.ndarray],
  records: list[dict[str, Any]],
  rows: list[dict[str, Any]],
  figures_dir: str,
  test_dir: str,
) -> str:
  """ablation_checkerboard.png: the example test image's winning-class probability under each upsampling."""
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
  return _save_figure(plt, figure, figures_dir, "ablation_checkerboard.png")


def load_examples(cells_dir: str, seed: int) -> dict[tuple[str, str], np.ndarray]:
  """The kept probability maps of the full regime's cells for one seed: {(variant, upsampling): [H, W, C]}."""
  examples = {}
  for name in sorted(os.listdir(cells_dir)) if os.path.isdir(cells_dir) else []:
    if name.startswith("full_") and name.endswith(f"_seed{seed}.npz"):
      with np.load(os.path.join(cells_dir, name)) as data:
        examples[(str(data["variant"]), str(data["upsampling"]))] = data["probabilities"].astype(np.float32)
  return examples


def write_report(
  args: argparse.Namespace, records: list[dict[str, Any]], paths_test: str | None, figures: bool = True
) -> tuple[str, list[str]]:
  """OUT/ablation.md and OUT/ablation.json from the finished cells, and the figures unless told not to."""
  rows = summarise(records)
  table = markdown_table(rows)
  decoders = decoder_rows(records, boundary_scores(records, os.path.join(args.out, "cells"), paths_test))
  if len(decoders) > 1:
    table += "\n\nDecoders (full data, learned bilinear deconvolutions):\n\n" + decoder_table(decoders)
  planned = len(plan_cells(args))
  header = (
    f"{len(records)} of {planned} planned cells finished"
    f" ({args.image_size}x{args.image_size} mosaics, {args.train_images} training images"
    f" (small regime {small_train_images(args)}), {args.val_images} validation, {args.test_images} test;"
    f" {args.epochs} epochs of batch {args.batch_size}).\n\n"
  )
  with open(os.path.join(args.out, "ablation.md"), "w") as handle:
    handle.write(header + table + "\n")
  write_json(
    os.path.join(args.out, "ablation.json"),
    {"settings": cell_settings(args), "planned_cells": planned, "rows": rows, "decoders": decoders, "cells": records},
  )
  written = []
  if figures and records:
    examples = load_examples(os.path.join(args.out, "cells"), min(args.seeds))
    written = draw_figures(records, rows, args.figures or args.out, paths_test, examples)
    if len(decoders) > 1:
      written.append(draw_decoder_figure(decoders, args.figures or args.out))
  return table, written
