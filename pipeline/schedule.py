"""Date partitions for nightly runs: ``{date}``, ``{yyyy}``, ``{mm}``, ``{dd}`` in flag values.

A nightly job is the same command every night over a new partition, e.g.::

    --input 'gs://drops/{yyyy}/{mm}/{dd}/*.tif' --output 'gs://masks/date={date}'

``--date YYYY-MM-DD`` picks the partition; without it the run takes yesterday
in UTC, the partition a scheduler firing after midnight wants, and the same
on every machine whatever its time zone. ``{prev_date}``, ``{prev_yyyy}``,
``{prev_mm}`` and ``{prev_dd}`` are the day before, so a nightly run can name
the previous night's output (``--compare_to 'gs://masks/date={prev_date}'``).
Templates are filled in the raw argument list before Beam parses it, so every
flag (input, manifest, tfrecord, output, even ``--job_name``) can use them and
validation sees real paths.
"""

from __future__ import annotations

import argparse
import datetime
import re
from typing import Any, List, Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

PLACEHOLDERS = ("date", "yyyy", "mm", "dd", "prev_date", "prev_yyyy", "prev_mm", "prev_dd")
# {word} tokens; only the known ones are replaced, other lowercase words are
# rejected as typos. Anything else in braces (e.g. a JSON value) is left alone.
_TOKEN = re.compile(r"\{([A-Za-z_]+)\}")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ScheduleOptions(PipelineOptions):
  """The run's date partition."""

  @classmethod
  def _add_argparse_args(cls, parser: argparse._ActionsContainer) -> None:
    parser.add_argument(
      "--date",
      default=None,
      metavar="YYYY-MM-DD",
      help="Date partition filled into {date} (YYYY-MM-DD), {yyyy}, {mm} and {dd} in any "
      "flag value, e.g. --input 'gs://bucket/{yyyy}/{mm}/{dd}/*.png'. Default: yesterday (UTC).",
    )
    parser.add_argument(
      "--max_failure_fraction",
      type=float,
      default=None,
      metavar="FRACTION",
      help="Failure budget for scheduled runs: when more than this fraction of the inputs read "
      "failed (e.g. 0.05), the run still writes every output, then exits with status 3 so "
      "the scheduler alerts. Default: no budget (exit 0 whatever failed).",
    )
    parser.add_argument(
      "--compare_to",
      default=None,
      metavar="PREVIOUS_OUT",
      help="An earlier run's --output (local or gs://, e.g. '/data/masks/{prev_date}'): after the run, "
      "summary.json gains a 'drift' block comparing each class's pixel share and the distribution of "
      "its per-image fractions (PSI, KS) with that run. A PREVIOUS_OUT that does not exist (the first "
      "night) only warns; one without a summary.json is an error.",
    )
    parser.add_argument(
      "--drift_threshold",
      type=float,
      default=None,
      metavar="FRACTION",
      help="With --compare_to: flag classes whose share of all pixels moved by more than this fraction "
      "(default 0.05 = 5 percentage points) or whose PSI is above 0.25 and above sampling noise.",
    )
    parser.add_argument(
      "--fail_on_drift",
      action="store_true",
      default=False,
      help="With --compare_to: exit with status 4, after writing every output, when any class is flagged "
      "(a failure budget exceeded, status 3, wins).",
    )


class FailureBudgetExceeded(RuntimeError):
  """More inputs failed than ``--max_failure_fraction`` allows (all outputs are written)."""


def check_failure_budget(counts: dict[str, Any], max_failure_fraction: Optional[float], output: str) -> None:
  """Raises FailureBudgetExceeded when ``failed / read`` is above the budget."""
  if max_failure_fraction is None:
    return
  read, failed = int(counts.get("read", 0)), int(counts.get("failed", 0))
  if read and failed / read > max_failure_fraction:
    raise FailureBudgetExceeded(
      f"{failed} of {read} inputs failed ({failed / read:.1%}), above --max_failure_fraction="
      f"{max_failure_fraction:g}. Every output was written; the reasons are in {output}/failures/. "
      "Fix or remove those inputs and re-run with --skip_existing."
    )


def yesterday_utc(now: Optional[datetime.datetime] = None) -> datetime.date:
  """Yesterday's date in UTC (``now`` is for tests; naive values are taken as UTC)."""
  now = now or datetime.datetime.now(datetime.timezone.utc)
  if now.tzinfo is not None:
    now = now.astimezone(datetime.timezone.utc)
  return now.date() - datetime.timedelta(days=1)


def parse_date(value: Optional[str], now: Optional[datetime.datetime] = None) -> datetime.date:
  """``--date`` value -> date; ``None`` or empty means yesterday (UTC)."""
  if value is None or not str(value).strip():
    return yesterday_utc(now)
  text = str(value).strip()
  if not _DATE.match(text):
    raise ValueError(f"--date={value!r} is not a date: use YYYY-MM-DD, e.g. --date=2024-05-31.")
  try:
    return datetime.date.fromisoformat(text)
  except ValueError:
    raise ValueError(f"--date={value!r} is not a calendar date (YYYY-MM-DD).") from None


def fill_template(template: str, date: datetime.date) -> str:
  """Replace ``{date}``, ``{yyyy}``, ``{mm}``, ``{dd}`` (and their ``{prev_*}`` day-before forms) in ``template``."""
  previous = date - datetime.timedelta(days=1)
  values = {}
  for prefix, day in (("", date), ("prev_", previous)):
    values.update(
      {
        prefix + "date": day.isoformat(),
        prefix + "yyyy": "%04d" % day.year,
        prefix + "mm": "%02d" % day.month,
        prefix + "dd": "%02d" % day.day,
      }
    )

  def replace(match: re.Match[str]) -> str:
    name = match.group(1)
    if name in values:
      return values[name]
    if name.islower():
      raise ValueError(
        f"unknown placeholder {{{name}}} in {template!r}; the date placeholders are "
        + ", ".join("{%s}" % p for p in PLACEHOLDERS)
        + "."
      )
    return match.group(0)

  return _TOKEN.sub(replace, template)


def fill_date_templates(argv: Sequence[str], now: Optional[datetime.datetime] = None) -> List[str]:
  """The argument list with every placeholder filled from ``--date`` (default yesterday, UTC).

  ``--date`` itself is kept (as the resolved date), so the options record which
  partition a run processed.
  """
  args = list(argv)
  raw = None
  for index, arg in enumerate(args):
    if arg == "--date":
      if index + 1 >= len(args):
        raise ValueError("--date needs a value: --date=YYYY-MM-DD.")
      raw = args[index + 1]
    elif arg.startswith("--date="):
      raw = arg[len("--date=") :]
  date = parse_date(raw, now)

  filled = []
  skip_next = False
  for arg in args:
    if skip_next:
      skip_next = False
      continue
    if arg == "--date" or arg.startswith("--date="):
      skip_next = arg == "--date"
      continue
    filled.append(fill_template(arg, date))
  filled.append("--date=" + date.isoformat())
  return filled
