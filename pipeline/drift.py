"""Run-to-run drift: do tonight's masks look like last night's?

The command behind ``python -m pipeline.drift OUT --compare_to PREVIOUS_OUT``:
after the fact (e.g. after a Dataflow job), the same drift block the launcher
adds with ``--compare_to``. The statistics are ``pipeline.post_run.drift``;
the summary is written by ``pipeline.post_run.summary``.
"""

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pipeline import report
from pipeline.errors import OptionsError, command_parser
from pipeline.paths import absolute
from pipeline.post_run import summary as summary_file
from pipeline.post_run.drift import (
  DEFAULT_THRESHOLD,
  EXIT_CODE,
  DriftDetected,
  check_compare_to,
  check_drift,
  check_threshold,
  compute_drift,
  format_drift,
)
from pipeline.report import load
from pipeline.schedule import fill_date_templates


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = command_parser("pipeline.drift", __doc__)
  parser.add_argument("output", help="the finished run's --output directory (local or gs://)")
  parser.add_argument(
    "--compare_to",
    required=True,
    metavar="PREVIOUS_OUT",
    help="an earlier run's --output; {date}, {prev_date}, ... are filled from --date",
  )
  parser.add_argument(
    "--drift_threshold",
    type=float,
    default=None,
    metavar="FRACTION",
    help=f"flag classes whose pixel share moved more than this (default {DEFAULT_THRESHOLD})",
  )
  parser.add_argument("--fail_on_drift", action="store_true", help=f"exit {EXIT_CODE} when a class is flagged")
  parser.add_argument(
    "--date", default=None, metavar="YYYY-MM-DD", help="date for the path templates (default: yesterday, UTC)"
  )
  parser.add_argument("--no_report", action="store_true", help="do not re-render OUT/report.html")
  return parser.parse_args(list(argv))


def add_drift(output: str, compare_to: str, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
  """Computes the drift block and rewrites ``OUT/summary.json`` with it; returns the new summary."""
  job_summary = load.read_summary(output, [])
  if not job_summary:
    raise OptionsError(f"{output} has no readable {load.SUMMARY_FILE}: it is not a finished deconvseg run.")
  drift = compute_drift(output, compare_to, threshold, summary=job_summary)
  return summary_file.finish(output, job_summary, drift=drift)


def main(argv: Sequence[str] | None = None) -> int:
  """Exit status 0; 2 for a bad invocation or OUT not a finished run; EXIT_CODE when --fail_on_drift fires."""
  argv = list(sys.argv[1:] if argv is None else argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  logging.getLogger("apache_beam").setLevel(logging.WARNING)
  try:
    args = parse_args(fill_date_templates(argv))
    threshold = check_threshold(args.drift_threshold)
    output = absolute(args.output).rstrip("/") or "/"
    if not load.exists(load.join(output, load.SUMMARY_FILE)):
      raise OptionsError(f"{output} has no {load.SUMMARY_FILE}: it is not the --output of a finished run.")
    previous = check_compare_to(args.compare_to, output)
  except (OptionsError, ValueError) as exc:
    print(f"deconvseg drift: error: {exc}", file=sys.stderr)
    return 2
  if previous is None:
    return 0
  summary = add_drift(output, previous, threshold)
  if not args.no_report:
    report.write_report(output)
  print(format_drift(summary["drift"]), flush=True)
  try:
    check_drift(summary["drift"], args.fail_on_drift)
  except DriftDetected as exc:
    print(f"deconvseg drift: error: {exc}", file=sys.stderr)
    return EXIT_CODE
  return 0


if __name__ == "__main__":
  sys.exit(main())
