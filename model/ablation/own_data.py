"""The decoder grid on a dataset of your own, at model.train's defaults: ``python -m model.ablation --data DIR``.

    python -m model.ablation --data data/nuclei --variants fcn8s fcn4s fcn2s --seeds 0 1 2 --out runs/nuclei_decoders

The mosaic grid (the rest of model.ablation) trains small cells in-process
with a shortened recipe. This one answers the user's question instead: "on
*my* data, trained the way the README trains it, which decoder wins?" Each
cell is the walkthrough's own two commands, one variant and one seed:
``python -m model.train --data DIR --variant V --seed S`` (every other
setting at its default, or as given by ``--train_args``), timed, then the
best checkpoint scored on the dataset's test split with model.evaluate's
``evaluate`` (IoU and boundary F1 per class). Cells are resumable JSON files
under OUT/cells/; the table pairs each variant with FCN-8s by seed, with 95 %
t-intervals, for the mean IoU, the mean boundary F1 and every class's IoU.
"""

import argparse
import os
import shlex
import subprocess
import sys
import time
from typing import Any

from model.ablation.grid import load_cached, write_json
from model.ablation.report import interval_text
from model.ablation.stats import DECODER_REFERENCE, t_interval

SCORES = ("mean_iou", "mean_boundary_f1")


def cell_id(variant: str, seed: int) -> str:
  return f"{variant}_seed{seed}"


def cell_settings(args: argparse.Namespace) -> dict[str, Any]:
  """What a cached cell must have been computed with to be reused."""
  return {"data": os.path.abspath(args.data), "split": args.split, "train_args": args.train_args}


def train_command(args: argparse.Namespace, variant: str, seed: int, run_dir: str) -> list[str]:
  return [
    sys.executable,
    "-m",
    "model.train",
    "--data",
    args.data,
    "--out",
    run_dir,
    "--variant",
    variant,
    "--seed",
    str(seed),
    "--verbose",
    "0",
  ] + shlex.split(args.train_args)


def run_cell(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
  """Train one cell with model.train (a child process, as a user runs it) and score its best checkpoint."""
  from model.training.evaluate import evaluate

  identifier = cell_id(variant, seed)
  run_dir = os.path.join(args.out, "runs", identifier)
  command = train_command(args, variant, seed, run_dir)
  started = time.monotonic()
  subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
  train_seconds = time.monotonic() - started
  result = evaluate(os.path.join(run_dir, "best.keras"), args.data, args.split)
  return {
    "id": identifier,
    "variant": variant,
    "seed": seed,
    "settings": cell_settings(args),
    "command": " ".join(shlex.quote(part) for part in ["python"] + command[1:]),
    "train_seconds": round(train_seconds, 1),
    "mean_iou": result["mean_iou"],
    "mean_boundary_f1": result["mean_boundary_f1"],
    "per_class_iou": result["per_class_iou"],
    "per_class_boundary_f1": result["per_class_boundary_f1"],
  }


def _scores(record: dict[str, Any]) -> dict[str, Any]:
  values = {name: record[name] for name in SCORES}
  values.update({f"iou {name}": value for name, value in record["per_class_iou"].items()})
  return values


def rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per variant and score: mean with its 95 % interval over seeds, and the difference to FCN-8s paired by seed."""
  # variant -> seed -> score name -> value
  by_variant: dict[str, dict[int, dict[str, Any]]] = {}
  for record in records:
    by_variant.setdefault(record["variant"], {})[record["seed"]] = _scores(record) | {
      "train_minutes": record["train_seconds"] / 60
    }
  reference = by_variant.get(DECODER_REFERENCE, {})
  table: list[dict[str, Any]] = []
  for variant, seeds in by_variant.items():
    for score in next(iter(seeds.values())):
      values = {seed: scores[score] for seed, scores in seeds.items() if scores.get(score) is not None}
      row: dict[str, Any] = {"variant": variant, "score": score, "seeds": sorted(values)}
      row["mean"], row["ci"] = t_interval(list(values.values()))
      paired = sorted(set(values) & {seed for seed, scores in reference.items() if scores.get(score) is not None})
      if variant != DECODER_REFERENCE and paired:
        differences = [values[seed] - reference[seed][score] for seed in paired]
        row["difference"], row["difference_ci"] = t_interval(differences)
        row["paired_seeds"] = paired
      table.append(row)
  return table


def markdown(table: list[dict[str, Any]]) -> str:
  lines = ["| decoder | score | seeds | mean (95 % CI) | vs FCN-8s, paired by seed |", "|---|---|---|---|---|"]
  for row in table:
    digits = 1 if row["score"] == "train_minutes" else 4
    if row["variant"] == DECODER_REFERENCE:
      versus = "reference"
    elif "difference" in row:
      paired = f" (n={len(row['paired_seeds'])})"
      versus = interval_text(row["difference"], row["difference_ci"], digits, signed=True) + paired
    else:
      versus = "–"
    lines.append(
      f"| {row['variant']} | {row['score']} | {len(row['seeds'])} | {interval_text(row['mean'], row['ci'], digits)} | "
      f"{versus} |"
    )
  return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Run (or resume) the grid over --variants x --seeds; writes OUT/decoders.{md,json} after every cell."""
  started = time.monotonic()
  cells_dir = os.path.join(args.out, "cells")
  os.makedirs(cells_dir, exist_ok=True)
  settings = cell_settings(args)
  records: list[dict[str, Any]] = []
  ran: list[str] = []
  cached: list[str] = []
  skipped: list[str] = []
  plan = [(variant, seed) for seed in args.seeds for variant in args.variants]
  for number, (variant, seed) in enumerate(plan, start=1):
    path = os.path.join(cells_dir, cell_id(variant, seed) + ".json")
    record = load_cached(path, settings)
    if record is None and not args.report_only:
      if args.max_minutes is not None and time.monotonic() - started > args.max_minutes * 60:
        skipped.append(cell_id(variant, seed))
        continue
      record = run_cell(args, variant, seed)
      write_json(path, record)
      ran.append(record["id"])
      print(
        f"ablation: [{number}/{len(plan)}] {record['id']} on {args.data}: test mean IoU {record['mean_iou']:.4f}, "
        f"BF {record['mean_boundary_f1']:.4f}, trained in {record['train_seconds']:.0f} s",
        flush=True,
      )
    elif record is None:
      skipped.append(cell_id(variant, seed))
      continue
    else:
      cached.append(record["id"])
    records.append(record)
    table = rows(records)
    with open(os.path.join(args.out, "decoders.md"), "w") as handle:
      handle.write(markdown(table) + "\n")
    write_json(os.path.join(args.out, "decoders.json"), {"settings": settings, "rows": table, "cells": records})
  text = markdown(rows(records)) if records else "(no finished cells)"
  print(text, flush=True)
  print(f"ablation: ran {len(ran)}, cached {len(cached)}, left {len(skipped)}", flush=True)
  return {"ran": ran, "cached": cached, "skipped": skipped, "table": text}
