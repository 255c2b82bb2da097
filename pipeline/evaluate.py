"""Score a finished run against ground truth after the fact: ``python -m pipeline.evaluate OUT --truth 'GLOB'``.

For a run made without ``--truth`` (or to score it against other labels),
this reads ``OUT/stats/`` (JSON Lines, CSV or Parquet, as the run wrote
them) and each image's ``OUT/masks/<key>.png``, matches truth masks to images
by the same rule as ``--truth`` (``transforms.truth``), and writes
``OUT/evaluation.json``: per image the same ``truth`` block a ``--truth`` run
puts in its stats record, and the same run-level ``truth`` block as its
``summary.json``, both with the boundary F-score added (``model/training/boundary.py``:
per class, per image, averaged over images; ``--bf_tolerance`` pixels). Then
it re-renders ``OUT/report.html`` with the truth sections. Everything goes
through Beam's FileSystems, so ``gs://`` works.

Images that failed in the run have no mask and are not scored; a truth mask
that cannot be compared with its mask is listed under ``failures`` (stage
``truth``) and counted in ``images_failed``. A folder whose run did not
finish (``OUT/run_state.json``) is still scored, with a warning on stderr and
the same sentence first in ``problems``.
"""

import argparse
import datetime
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
from apache_beam.io.filesystems import FileSystems

from model.training.boundary import (
  DEFAULT_TOLERANCE,
  BoundaryF1Mean,
  add_bf_tolerance_argument,
  boundary_f1,
  check_bf_tolerance_argument,
  check_tolerance,
  image_boundary_scores,
)
from pipeline import report
from pipeline.errors import OptionsError, command_parser
from pipeline.paths import absolute, as_glob, check_truth, matching_files
from pipeline.report import load
from transforms.imaging.mask_files import decode_mask, mask_relpath
from transforms.imaging.records import STAGE_TRUTH
from transforms.out_files import atomic_write, join
from transforms.truth import TruthError, image_truth, read_truth, run_truth, stem, truth_index

EVALUATION_FILE = "evaluation.json"


class EvaluateError(ValueError):
  """A bad invocation or an output directory that cannot be scored; printed as one line."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = command_parser("pipeline.evaluate", __doc__, EvaluateError)
  parser.add_argument("output", help="the run's --output directory (local or gs://)")
  parser.add_argument(
    "--truth",
    nargs="+",
    action="extend",
    required=True,
    metavar="GLOB",
    help="ground-truth masks, matched to images as with the pipeline's --truth",
  )
  parser.add_argument("--no_report", action="store_true", help="do not re-render OUT/report.html")
  add_bf_tolerance_argument(parser)
  args = parser.parse_args(list(argv))
  check_bf_tolerance_argument(parser, args)
  return args


def _read_mask(path: str) -> np.ndarray:
  with FileSystems.open(path, compression_type="uncompressed") as handle:
    return decode_mask(handle.read())[0]


def _failure(row: dict[str, Any], truth_uri: str, exc: Exception) -> dict[str, Any]:
  message = str(exc) if isinstance(exc, TruthError) else f"cannot compare {truth_uri} with the mask: {exc}"
  return {
    "uri": str(row.get("uri") or ""),
    "key": str(row.get("key")),
    "stage": STAGE_TRUTH,
    "error_type": type(exc).__name__,
    "message": message,
  }


def _score(truth_uri: str, predicted: np.ndarray, names: list[str], tolerance: float) -> tuple[dict[str, Any], Any]:
  """One image's ``truth`` block (as a --truth run's, plus its boundary F-score) and its per-class BF."""
  height, width = predicted.shape
  labels = read_truth(truth_uri, width, height, len(names))
  block = image_truth(truth_uri, labels, predicted, names)
  scores = boundary_f1(labels, predicted, len(names), tolerance)
  block.update(image_boundary_scores(scores, names))
  return block, scores


def evaluate(output: str, patterns: list[str], bf_tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
  """Scores the run in ``output`` against the truth masks of ``patterns``; writes and returns evaluation.json."""
  try:
    bf_tolerance = check_tolerance(bf_tolerance)
  except ValueError as exc:
    raise EvaluateError(str(exc)) from None
  output = absolute(output).rstrip("/")
  patterns = [as_glob(absolute(pattern)) for pattern in patterns]
  try:
    check_truth(patterns)
  except OptionsError as exc:
    raise EvaluateError(str(exc)) from None
  problems: list[str] = []
  summary = load.read_summary(output, problems)
  names = [str(entry.get("name")) for entry in summary.get("classes") or [] if isinstance(entry, dict)]
  if not names:
    raise EvaluateError(
      load.incomplete_run(output, summary)
      or f"{output} has no readable summary.json with its classes: it is not the --output of a finished deconvseg run"
    )
  run = load.run_summary(summary)
  # Files the summary lists outside OUT belong to where the run was written, not to this copy of it.
  run.stats_files = [path for path in run.stats_files if path.startswith(output + "/")]
  run.failure_files = [path for path in run.failure_files if path.startswith(output + "/")]
  index = truth_index({pattern: matching_files(pattern) for pattern in patterns})

  keys: set[str] = set()
  scored = _score_images(
    load.iter_rows(load.stats_files(output, run), problems), output, index, names, bf_tolerance, keys
  )
  for row in load.iter_rows(load.failure_files(output, run), problems):
    keys.add(stem(str(row.get("key"))))
  images, failures = scored.images, scored.failures
  with_truth = sum(1 for entry in images if entry["truth"] is not None)
  truth = run_truth(
    scored.confusion, names, with_truth, len(images) - with_truth, len(set(index) - keys), len(failures), patterns
  )
  truth.update(scored.boundary.result(names, bf_tolerance))
  document = {
    "output": output,
    "run_end_time": summary.get("end_time"),
    "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "truth": truth,
    "images": images,
    "failures": failures,
    "problems": problems,
  }
  atomic_write(
    output,
    join(output, EVALUATION_FILE),
    json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8"),
    "application/json",
  )
  return document


class _Scored(NamedTuple):
  """What ``_score_images`` found: per image an entry, the truth failures, and the run's sums."""

  images: list[dict[str, Any]]
  failures: list[dict[str, Any]]
  confusion: np.ndarray
  boundary: BoundaryF1Mean


def _score_images(
  rows: Iterable[dict[str, Any]],
  output: str,
  index: dict[str, str],
  names: list[str],
  tolerance: float,
  keys: set[str],
) -> _Scored:
  """Scores each stats record's mask against its truth mask (``index``: by stem); adds each record's stem to ``keys``."""
  images, failures = [], []
  confusion = np.zeros((len(names), len(names)), np.int64)
  boundary = BoundaryF1Mean(len(names))
  for row in rows:
    key = str(row.get("key"))
    keys.add(stem(key))
    truth_uri = index.get(stem(key))
    entry: dict[str, Any] = {
      "key": key,
      "uri": row.get("uri"),
      # The record names its mask (PNG or GeoTIFF); records of older runs did not.
      "mask": str(row.get("mask") or join(output, mask_relpath(key))),
      "width": int(float(row.get("width") or 0)),
      "height": int(float(row.get("height") or 0)),
      "truth": None,
    }
    if truth_uri is not None:
      try:
        entry["truth"], scores = _score(truth_uri, _read_mask(entry["mask"]), names, tolerance)
      except Exception as exc:  # one bad file must not stop the rest
        failures.append(_failure(row, truth_uri, exc))
        continue
      confusion += np.asarray(entry["truth"]["confusion"], np.int64)
      boundary.add(scores)
    images.append(entry)
  return _Scored(images, failures, confusion, boundary)


def format_classes(block: dict[str, Any]) -> str:
  """Per class: IoU and boundary F-score (BF) of the run-level ``truth`` block, as a table."""
  score = lambda value: "-" if value is None else f"{value:.4f}"  # noqa: E731
  lines = [f"{'class':<16}{'IoU':>8}{'BF':>8}"]
  for name in block["classes"]:
    lines.append(f"{name:<16}{score(block['per_class_iou'][name]):>8}{score(block['per_class_boundary_f1'][name]):>8}")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  logging.getLogger("apache_beam").setLevel(logging.WARNING)
  try:
    args = parse_args(argv)
    document = evaluate(args.output, args.truth, args.bf_tolerance)
  except EvaluateError as exc:
    print(f"evaluate: error: {exc}", file=sys.stderr)
    return 2
  incomplete = load.incomplete_run(absolute(args.output).rstrip("/"))
  if incomplete:  # the scores stand for the images the folder holds, which may not be all of them
    print(f"evaluate: warning: {incomplete}", file=sys.stderr)
  if not args.no_report:
    report.write_report(args.output)
  block = document["truth"]
  score = lambda value: "-" if value is None else f"{value:.4f}"  # noqa: E731
  print(
    f"{join(absolute(args.output).rstrip('/'), EVALUATION_FILE)}: {block['images_with_truth']} images with "
    f"truth, {block['images_without_truth']} without, {block['truth_files_unmatched']} truth files matching "
    f"no image, {block['images_failed']} failed; pixel accuracy {score(block['pixel_accuracy'])}, mean IoU "
    f"{score(block['mean_iou'])}, mean boundary F-score {score(block['mean_boundary_f1'])} (tolerance "
    f"{block['boundary_tolerance']:g} px)"
  )
  print(format_classes(block))
  return 0


if __name__ == "__main__":
  sys.exit(main())
