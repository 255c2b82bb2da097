"""The page: Jinja2 templates filled from the aggregated run.

Templates (``templates/*.j2``) hold the markup, this module the few decisions
about what goes in (which sections, which rows, what a number looks like).
Autoescaping is on for every template: class names, keys, failure messages and
model paths come from user files, and none of them may become markup.

The page opens offline and can be mailed around: no scripts, no external CSS
or fonts, charts are inline SVG and images are thumbnails inlined as ``data:``
URIs. A Content-Security-Policy forbids anything else.
"""

import datetime
import html
import logging

import jinja2
import markupsafe

from pipeline.report import aggregate, charts, gallery, load
from transforms import out_files, records

LOGGER = logging.getLogger(__name__)

REPORT_NAME = records.REPORT_FILE
DEFAULT_MAX_GALLERY = 12
DEFAULT_THUMBNAIL_SIZE = 256
MAX_FAILURE_ROWS = 500
MAX_MESSAGE_CHARS = 2000
MAX_WORST_IMAGES = 10
MAX_FLAGGED_IMAGES = 20  # as many as summary.json's ood.flagged_keys


def format_count(value):
  return "–" if value is None else f"{int(round(value)):,}"


def format_number(value, digits=3):
  if value is None:
    return "–"
  return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


def format_fixed(value):
  """Scores in [0, 1] with a fixed three decimals, so a column of them lines up."""
  return "–" if value is None else f"{value:.3f}"


def format_percent(value, digits=1):
  return "–" if value is None else f"{100.0 * value:.{digits}f}%"


def format_duration(seconds):
  if seconds is None:
    return "–"
  seconds = float(seconds)
  if seconds < 60:
    return f"{seconds:.1f} s"
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours} h {minutes:02d} min {seconds:02d} s" if hours else f"{minutes} min {seconds:02d} s"


def format_bytes(value):
  value = load.number(value)
  if value is None:
    return "–"
  for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if abs(value) >= scale:
      return f"{value / scale:,.2f} {unit}"
  return f"{int(value):,} B"


def _escape(value):
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


def _model_rows(model, card):
  """(label, value) rows of the model table; empty when no model was recorded."""
  name, version = model.get("name") or card.get("name"), model.get("version") or card.get("version")
  if not (name or card):
    return []
  rows = [("Model", name or "–"), ("Version", version or "–")]
  architecture = card.get("architecture") if isinstance(card.get("architecture"), dict) else {}
  if architecture:
    rows.append(
      ("Architecture", " / ".join(str(architecture[key]) for key in ("variant", "encoder") if key in architecture))
    )
  trained_on = card.get("trained_on") if isinstance(card.get("trained_on"), dict) else {}
  if trained_on.get("dataset"):
    rows.append(("Trained on", trained_on["dataset"]))
  test = load.card_test_metrics(card)
  for key, label in (
    ("pixel_accuracy", "Test pixel accuracy"),
    ("mean_accuracy", "Test mean accuracy"),
    ("mean_iou", "Test mean IoU"),
    ("fw_iou", "Test frequency-weighted IoU"),
  ):
    if load.number(test.get(key)) is not None:
      rows.append((label, f"{float(test[key]):.3f}"))
  if test.get("images"):
    rows.append(("Test images", test["images"]))
  if model.get("path"):
    rows.append(("Path", model["path"]))
  return rows


def _engine_rows(engine):
  """(label, value) rows naming the inference engine, its precision and the CPU it ran on."""
  if not engine.get("engine"):
    return []
  details = ", ".join(str(engine[key]) for key in ("runtime", "device") if engine.get(key))
  rows = [
    ("Engine", f"{engine['engine']} {engine.get('precision', '')}".strip() + (f" ({details})" if details else ""))
  ]
  if engine.get("tta") == "flips":
    rows.append(("Test-time flips", "on: class probabilities averaged over 4 flips (about 4x the model time)"))
  if engine.get("reason"):
    rows.append(("Chosen because", engine["reason"]))
  cpu = engine.get("cpu") if isinstance(engine.get("cpu"), dict) else {}
  if cpu.get("name"):
    flags = ", ".join(cpu.get("flags") or []) or "no AVX-512 or AMX"
    rows.append(("CPU", f"{cpu['name']} ({cpu.get('cores', '?')} cores; {flags})"))
  return rows


def _summary(run, stats, failures, card, problems):
  figures = aggregate.run_figures(run, stats, failures)
  cards = [
    ("read", format_count(figures["read"]), "inputs read"),
    ("segmented", format_count(figures["segmented"]), "images segmented"),
    ("failed", format_count(figures["failed"]), "inputs failed"),
    ("duration", format_duration(figures["duration"]), "duration"),
    ("throughput", "–" if figures["throughput"] is None else f"{figures['throughput']:.2f}/s", "images per second"),
  ]
  if figures["confidence"] is not None:
    cards.append(("confidence", f"{figures['confidence']:.3f}", "mean pixel confidence"))
  methods = ", ".join(f"{method} {count}" for method, count in sorted(run.area_methods.items()))
  return {
    "cards": cards,
    "problems": problems,
    "run": run,
    "model_rows": _model_rows(run.model, card) + _engine_rows(run.engine),
    "crs": run.crs,
    "area_methods": methods,
  }


def area_display(area_unit, areas, georeferenced):
  """(unit shown, divisor) for class areas: m² of georeferenced images read as hectares, or km² from 100 km² up."""
  if not georeferenced or area_unit != "m^2":
    return area_unit or "units", 1.0
  largest = max((area for area in areas if area is not None), default=0.0)
  return ("km²", 1e6) if largest >= 1e8 else ("ha", 1e4)


def _classes(classes, totals, area_unit, card, georeferenced=False):
  iou = load.card_test_metrics(card).get("per_class_iou")
  all_pixels = sum(aggregate.pixels_of(totals, info.name) for info in classes)
  recorded = [totals[info.name] for info in classes if totals.get(info.name)]
  unit, divisor = area_display(area_unit, [total.area for total in recorded], georeferenced)
  return {
    "rows": [(info, totals.get(info.name) or load.ClassTotal(0.0)) for info in classes],
    "all_pixels": all_pixels,
    "area_unit": unit,
    "area_divisor": divisor,
    "has_area": any(total.area is not None for total in recorded),
    "has_confidence": any(total.mean_confidence is not None for total in recorded),
    "iou": iou if isinstance(iou, dict) else {},
    "chart": charts.bar_chart(classes, totals) if all_pixels else None,
  }


def _drift(drift, classes):
  """Per class the previous and current pixel share, the change and PSI/KS (``--compare_to``)."""
  if not isinstance(drift, dict):
    return None
  colours = {info.name: info.color for info in classes}
  flagged = set(drift.get("flagged") or [])
  rows = []
  for entry in drift.get("classes") or []:
    if not isinstance(entry, dict):
      continue
    name = str(entry.get("name"))
    change = load.number(entry.get("change_pp"))
    rows.append(
      {
        "name": name,
        "flagged": name in flagged,
        "colour": colours.get(name),
        "reasons": ", ".join(map(str, entry.get("flagged_by") or [])) or "–",
        "cells": [
          format_percent(load.number(entry.get("previous_share")), 2),
          format_percent(load.number(entry.get("current_share")), 2),
          "–" if change is None else f"{change:+.2f} pp",
          format_fixed(load.number(entry.get("psi"))),
          format_fixed(load.number(entry.get("ks"))),
        ],
      }
    )
  rule = (
    f"A class is flagged when its share of all pixels moved by more than "
    f"{100 * (load.number(drift.get('threshold')) or 0.0):g} percentage points, or when the PSI of its "
    f"per-image fractions ({drift.get('psi_bins')} bins) is above {drift.get('psi_threshold')} and above "
    f"sampling noise ({format_fixed(load.number(drift.get('psi_noise_level')))} for these image counts)."
  )
  images = drift.get("images") if isinstance(drift.get("images"), dict) else {}
  return {"drift": drift, "images": images, "flagged": sorted(flagged), "rows": rows, "rule": rule}


def _ood(rule, flagged, items):
  """Flagged images, with why and a thumbnail; the rule and any check the card could not support."""
  rule = rule if isinstance(rule, dict) else {}
  thresholds = "; ".join(
    f"{name} {rule[name]}" for name in ("min_confidence", "outside_limit") if rule.get(name) is not None
  )
  return {
    "rule": rule,
    "thresholds": thresholds,
    "flagged": flagged,
    "thumbnails": items,
    "more": f" (the first {len(items)} by key)" if flagged.flagged > len(items) else "",
  }


def _mask_href(output_dir, record):
  """The mask relative to the report (which sits in OUT), else its full path."""
  prefix = output_dir.rstrip("/") + "/"
  return record.mask_path[len(prefix) :] if record.mask_path.startswith(prefix) else record.mask_path


def _truth(truth, source, items, classes, output_dir):
  per_class = truth.get("per_class_iou") if isinstance(truth.get("per_class_iou"), dict) else {}
  confusion = truth.get("confusion")
  return {
    "truth": truth,
    "source": source,
    "per_class": per_class,
    "confusion": charts.confusion_rows(confusion, classes) if isinstance(confusion, list) and confusion else None,
    "names": [info.name for info in classes],
    "thumbnails": [(item, _mask_href(output_dir, item.record)) for item in items],
  }


def _gallery(items, stats):
  figures = []
  for item in items:
    top = sorted(item.record.fractions.items(), key=lambda pair: -pair[1])[:3]
    figures.append((item, [(name, value) for name, value in top if value > 0]))
  return {"figures": figures, "images": stats.images}


def _failures(failures):
  messages = [
    failure.message if len(failure.message) <= MAX_MESSAGE_CHARS else failure.message[:MAX_MESSAGE_CHARS] + " …"
    for failure in failures.rows
  ]
  shown = (
    f"showing the first {len(failures.rows):,} of {failures.total:,}"
    if failures.total > len(failures.rows)
    else f"{failures.total:,}"
  )
  return {
    "total": failures.total,
    "kinds": failures.kinds(),
    "rows": list(zip(failures.rows, messages)),
    "shown": shown,
  }


def _io(moved):
  """Shuffle, read and written bytes (summary.json ``io``, from the run's Beam metrics): one small table."""
  if not isinstance(moved, dict):
    return None
  shuffle = moved.get("shuffle") if isinstance(moved.get("shuffle"), dict) else {}
  written = moved.get("written_bytes") if isinstance(moved.get("written_bytes"), dict) else {}
  labels = (
    ("refs", "de-duplicating GroupByKey: image refs (incl. TFRecord image bytes)"),
    ("tfrecord_payloads", "… of which TFRecord image bytes"),
    ("stitch_masks", "stitch GroupByKey: tile class-id crops"),
    ("stitch_overlays", "stitch GroupByKey: tile overlay crops"),
  )
  rows = []
  for key, label in labels:
    entry = shuffle.get(key) if isinstance(shuffle.get(key), dict) else {}
    rows.append((label, format_bytes(entry.get("bytes")), format_count(load.number(entry.get("elements")))))
  rows.append(("shuffle total", format_bytes(shuffle.get("total_bytes")), None))
  rows.append(
    (
      "read (encoded images)",
      format_bytes(moved.get("read_bytes")),
      format_count(load.number(moved.get("images_read"))),
    )
  )
  parts = ", ".join(
    f"{name} {format_bytes(written.get(name))}"
    for name in (records.MASKS_DIR, records.OVERLAYS_DIR, records.STATS_DIR, records.FAILURES_DIR)
    if load.number(written.get(name))
  )
  rows.append((f"written ({parts})" if parts else "written", format_bytes(written.get("total")), None))
  return {"source": moved.get("source") or "Beam metrics", "rows": rows}


def build_report(output_dir, max_gallery=DEFAULT_MAX_GALLERY, thumbnail_size=DEFAULT_THUMBNAIL_SIZE):
  """Read a run's output directory and return the report as an HTML string."""
  output_dir = output_dir.rstrip("/") or output_dir
  problems = []
  summary = load.read_summary(output_dir, problems)
  run = load.run_summary(summary)
  stats_files, failure_files = load.stats_files(output_dir, run), load.failure_files(output_dir, run)
  if not (run.counts["read"] is not None or stats_files or failure_files):
    raise FileNotFoundError(
      f"{output_dir} has no {load.SUMMARY_FILE}, stats or failures files: it is not the --output of a deconvseg run"
    )
  card = load.read_card(run, problems)

  evaluation = load.read_evaluation(output_dir, summary, problems)
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
    truth = evaluation["truth"]
    source = f"Scored after the run by python -m pipeline.evaluate ({load.EVALUATION_FILE})."
    for entry in evaluation.get("images") or []:
      if isinstance(entry, dict):
        worst.add(load.image_record(entry, output_dir))
  else:
    truth, source = summary.get("truth"), "Scored during the run (--truth)."

  failures = aggregate.FailureSummary(MAX_FAILURE_ROWS)
  for row in load.iter_rows(failure_files, problems):
    failures.add(load.failure_record(row))

  totals = run.totals or {name: load.ClassTotal(pixels, stats.areas.get(name)) for name, pixels in stats.pixels.items()}
  classes = aggregate.report_classes(card, run, stats)
  table, spec = gallery.palette(classes), gallery.input_spec(run, card)

  def thumbnails(records, size):
    return [gallery.gallery_item(record, table, size, run.tfrecord_image_feature, spec) for record in records]

  context = {
    "output_dir": output_dir,
    "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "classes": classes,
    "summary": _summary(run, stats, failures, card, problems),
    "class_areas": _classes(classes, totals, run.area_unit, card, georeferenced=bool(run.crs)),
    "drift": _drift(summary.get("drift"), classes),
    "truth": (
      _truth(truth, source, thumbnails(worst.worst_first(), thumbnail_size // 2), classes, output_dir)
      if isinstance(truth, dict)
      else None
    ),
    "ood": (
      _ood(summary.get("ood"), flagged, thumbnails(flagged.first(), thumbnail_size // 2))
      if flagged.checked or isinstance(summary.get("ood"), dict)
      else None
    ),
    "fractions": {
      "images": stats.images,
      "chart": charts.distribution_chart(classes, stats.distributions) if stats.images else None,
    },
    "gallery": _gallery(thumbnails(stats.gallery(), thumbnail_size), stats),
    "failures": _failures(failures),
    "io": _io(summary.get("io")),
  }
  return ENVIRONMENT.get_template("report.html.j2").render(context)


def write_report(output_dir, report_path=None, max_gallery=DEFAULT_MAX_GALLERY, thumbnail_size=DEFAULT_THUMBNAIL_SIZE):
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
