"""The page: Jinja2 templates filled from the aggregated run.

Templates (``templates/*.j2``) hold the markup; this module reads and
aggregates the run and fills them in. The few decisions about what goes in
are ``pipeline.report.sections`` (which sections, which rows) and
``pipeline.report.formats`` (what a number looks like). Autoescaping is on for every template: class names, keys, failure messages and
model paths come from user files, and none of them may become markup.

The page opens offline and can be mailed around: no scripts, no external CSS
or fonts, charts are inline SVG and images are thumbnails inlined as ``data:``
URIs. A Content-Security-Policy forbids anything else.
"""

import datetime
import html
import logging
from typing import Any

import jinja2
import markupsafe

from pipeline.report import aggregate, charts, gallery, load
from pipeline.report.formats import (
  format_bytes,
  format_count,
  format_duration,
  format_fixed,
  format_number,
  format_percent,
)
from pipeline.report.run_records import ImageRecord
from pipeline.report.sections import (
  MAX_MESSAGE_CHARS,
  classes_section,
  drift_section,
  failures_section,
  gallery_section,
  io_section,
  ood_section,
  summary_section,
  truth_section,
)
from transforms import out_files
from transforms.imaging import records

__all__ = [
  "DEFAULT_MAX_GALLERY",
  "DEFAULT_THUMBNAIL_SIZE",
  "ENVIRONMENT",
  "MAX_FAILURE_ROWS",
  "MAX_FLAGGED_IMAGES",
  "MAX_MESSAGE_CHARS",
  "MAX_WORST_IMAGES",
  "REPORT_NAME",
  "build_report",
  "write_report",
  "write_run_report",
]

LOGGER = logging.getLogger(__name__)

REPORT_NAME = records.REPORT_FILE
DEFAULT_MAX_GALLERY = 12
DEFAULT_THUMBNAIL_SIZE = 256
MAX_FAILURE_ROWS = 500
MAX_WORST_IMAGES = 10
MAX_FLAGGED_IMAGES = 20  # as many as summary.json's ood.flagged_keys


def _escape(value: Any) -> Any:
  """Autoescaping with the standard library's entities (``&quot;``, ``&#x27;``).

  Runs as the environment's ``finalize``, before Jinja's own escape, which then
  leaves the Markup as it is; values that already are Markup pass unchanged.
  The entities are those the report has always written, which tests and
  downstream scrapers match.
  """
  if hasattr(value, "__html__"):
    return value
  return markupsafe.Markup(html.escape(str(value), quote=True))


ENVIRONMENT = jinja2.Environment(
  loader=jinja2.PackageLoader("pipeline.report", "templates"),
  autoescape=True,
  finalize=_escape,
  trim_blocks=True,
  lstrip_blocks=True,
  undefined=jinja2.StrictUndefined,
)
ENVIRONMENT.filters.update(
  count=format_count,
  number=format_number,
  fixed=format_fixed,
  percent=format_percent,
  duration=format_duration,
  bytes=format_bytes,
  num=load.number,
  rgb=lambda color: "rgb({},{},{})".format(*color),
)


def build_report(
  output_dir: str, max_gallery: int = DEFAULT_MAX_GALLERY, thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE
) -> str:
  """Read a run's output directory and return the report as an HTML string."""
  output_dir = output_dir.rstrip("/") or output_dir
  problems: list[str] = []
  summary = load.read_summary(output_dir, problems)
  run = load.run_summary(summary)
  stats_files, failure_files = load.stats_files(output_dir, run), load.failure_files(output_dir, run)
  if not (run.counts["read"] is not None or stats_files or failure_files):
    raise FileNotFoundError(
      f"{output_dir} has no {load.SUMMARY_FILE}, stats or failures files: it is not the --output of a deconvseg run"
    )
  card = load.read_card(run, problems)

  evaluation = load.read_evaluation(output_dir, summary, problems)
  stats, worst, flagged = _image_figures(output_dir, stats_files, max_gallery, evaluation, problems)
  if evaluation is not None:
    truth = evaluation["truth"]
    source = f"Scored after the run by python -m pipeline.evaluate ({load.EVALUATION_FILE})."
  else:
    truth, source = summary.get("truth"), "Scored during the run (--truth)."

  failures = _failure_summary(failure_files, problems)
  totals = run.totals or {name: load.ClassTotal(pixels, stats.areas.get(name)) for name, pixels in stats.pixels.items()}
  classes = aggregate.report_classes(card, run, stats)
  table, spec = gallery.palette(classes), gallery.input_spec(run, card)

  def thumbnails(records: list[ImageRecord], size: int) -> list[gallery.GalleryItem]:
    return [gallery.gallery_item(record, table, size, run.tfrecord_image_feature, spec) for record in records]

  context = {
    "output_dir": output_dir,
    "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "classes": classes,
    "summary": summary_section(run, stats, failures, card, problems),
    "class_areas": classes_section(classes, totals, run.area_unit, card, georeferenced=bool(run.crs)),
    "drift": drift_section(summary.get("drift"), classes),
    "truth": (
      truth_section(truth, source, thumbnails(worst.worst_first(), thumbnail_size // 2), classes, output_dir)
      if isinstance(truth, dict)
      else None
    ),
    "ood": (
      ood_section(summary.get("ood"), flagged, thumbnails(flagged.first(), thumbnail_size // 2))
      if flagged.checked or isinstance(summary.get("ood"), dict)
      else None
    ),
    "fractions": {
      "images": stats.images,
      "chart": charts.distribution_chart(classes, stats.distributions) if stats.images else None,
    },
    "gallery": gallery_section(thumbnails(stats.gallery(), thumbnail_size), stats),
    "failures": failures_section(failures),
    "io": io_section(summary.get("io")),
  }
  return ENVIRONMENT.get_template("report.html.j2").render(context)


def _failure_summary(failure_files: list[str], problems: list[str]) -> aggregate.FailureSummary:
  failures = aggregate.FailureSummary(MAX_FAILURE_ROWS)
  for row in load.iter_rows(failure_files, problems):
    failures.add(load.failure_record(row))
  return failures


def _image_figures(
  output_dir: str,
  stats_files: list[str],
  max_gallery: int,
  evaluation: dict[str, Any] | None,
  problems: list[str],
) -> tuple[aggregate.RunStatistics, aggregate.WorstImages, aggregate.FlaggedImages]:
  """One pass over the stats records: the run's figures, its worst-scored images and its flagged ones.

  With an ``evaluation.json`` of this run, its scored images rank the worst instead of the records.
  """
  stats = aggregate.RunStatistics(max_gallery)
  worst = aggregate.WorstImages(MAX_WORST_IMAGES)
  flagged = aggregate.FlaggedImages(MAX_FLAGGED_IMAGES)
  for row in load.iter_rows(stats_files, problems):
    record = load.image_record(row, output_dir)
    stats.add(record)
    flagged.add(record)
    if evaluation is None:
      worst.add(record)
  stats.finish_distributions()
  if evaluation is not None:
    for entry in evaluation.get("images") or []:
      if isinstance(entry, dict):
        worst.add(load.image_record(entry, output_dir))
  return stats, worst, flagged


def write_report(
  output_dir: str,
  report_path: str | None = None,
  max_gallery: int = DEFAULT_MAX_GALLERY,
  thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE,
) -> str:
  """Write ``report.html`` for a finished run (default ``OUT/report.html``) and return its path.

  Raises ``transforms.out_files.OutputError`` when the file cannot be written.
  """
  report_path = report_path or load.join(output_dir, REPORT_NAME)
  document = build_report(output_dir, max_gallery=max_gallery, thumbnail_size=thumbnail_size)
  # Whole or not at all: a full disk must not leave a truncated report that looks like the run's.
  if report_path.startswith(output_dir.rstrip("/") + "/"):
    out_files.atomic_write(output_dir, report_path, document.encode("utf-8"), "text/html")
    out_files.discard_empty_temp_dir(output_dir)
  else:
    out_files.write_atomically(report_path, document.encode("utf-8"), "text/html")
  LOGGER.info("Wrote run report %s (%d bytes)", report_path, len(document))
  return report_path


def write_run_report(output_dir: str) -> str:
  """``write_report`` for the launcher: the report's path, or ``OutputFailed`` with one line saying why.

  A run asked for its report, so a report that cannot be written fails the
  run (``--no_report`` skips it); the line says how to write it afterwards.
  """
  path = load.join(output_dir, REPORT_NAME)
  try:
    return write_report(output_dir)
  except Exception as exc:
    found = out_files.resource_cause(exc)
    if found is not None:
      _, _, cause, hint = found
      why = f"{cause}; {hint}, then"
    else:
      lines = str(exc).strip().splitlines()
      why = f"{type(exc).__name__}: {lines[0] if lines else ''};"
    raise out_files.OutputFailed(
      f"cannot write the HTML report {path}: {why} run python -m pipeline.report {output_dir} "
      "(or re-run with --no_report)"
    ) from exc
