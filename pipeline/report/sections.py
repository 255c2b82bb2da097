"""What each section of the page shows: the rows, cells and captions the templates fill in.

Apart from ``pipeline.report.render`` (which reads and aggregates the run and
renders the page) because these are the page's small decisions, one function
per section: which model and engine rows, which class columns, what a drift
row or an io row says. Each takes what ``pipeline.report.aggregate`` and
``pipeline.report.load`` produced and returns the plain values its template
(``templates/*.j2``) shows.
"""

from typing import Any

from pipeline.report import aggregate, charts
from pipeline.report.formats import format_bytes, format_count, format_duration, format_fixed, format_percent
from pipeline.report.gallery import GalleryItem
from pipeline.report.run_records import (
  ClassInfo,
  ClassTotal,
  ImageRecord,
  RunSummary,
  as_dict,
  card_test_metrics,
  number,
)
from transforms.imaging import records

MAX_MESSAGE_CHARS = 2000


def model_rows(model: dict[str, Any], card: dict[str, Any]) -> list[tuple[str, Any]]:
  """(label, value) rows of the model table; empty when no model was recorded."""
  name, version = model.get("name") or card.get("name"), model.get("version") or card.get("version")
  if not (name or card):
    return []
  rows = [("Model", name or "–"), ("Version", version or "–")]
  architecture = as_dict(card.get("architecture"))
  if architecture:
    rows.append(
      ("Architecture", " / ".join(str(architecture[key]) for key in ("variant", "encoder") if key in architecture))
    )
  trained_on = as_dict(card.get("trained_on"))
  if trained_on.get("dataset"):
    rows.append(("Trained on", trained_on["dataset"]))
  test = card_test_metrics(card)
  for key, label in (
    ("pixel_accuracy", "Test pixel accuracy"),
    ("mean_accuracy", "Test mean accuracy"),
    ("mean_iou", "Test mean IoU"),
    ("fw_iou", "Test frequency-weighted IoU"),
  ):
    if number(test.get(key)) is not None:
      rows.append((label, f"{float(test[key]):.3f}"))
  if test.get("images"):
    rows.append(("Test images", test["images"]))
  if model.get("path"):
    rows.append(("Path", model["path"]))
  return rows


def engine_rows(engine: dict[str, Any]) -> list[tuple[str, Any]]:
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
  cpu = as_dict(engine.get("cpu"))
  if cpu.get("name"):
    flags = ", ".join(cpu.get("flags") or []) or "no AVX-512 or AMX"
    rows.append(("CPU", f"{cpu['name']} ({cpu.get('cores', '?')} cores; {flags})"))
  return rows


def summary_section(
  run: RunSummary,
  stats: aggregate.RunStatistics,
  failures: aggregate.FailureSummary,
  card: dict[str, Any],
  problems: list[str],
) -> dict[str, Any]:
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
    "model_rows": model_rows(run.model, card) + engine_rows(run.engine),
    "crs": run.crs,
    "area_methods": methods,
  }


def area_display(area_unit: str | None, areas: list[float | None], georeferenced: bool) -> tuple[str, float]:
  """(unit shown, divisor) for class areas: m² of georeferenced images read as hectares, or km² from 100 km² up."""
  if not georeferenced or area_unit != "m^2":
    return area_unit or "units", 1.0
  largest = max((area for area in areas if area is not None), default=0.0)
  return ("km²", 1e6) if largest >= 1e8 else ("ha", 1e4)


def classes_section(
  classes: list[ClassInfo],
  totals: dict[str, ClassTotal],
  area_unit: str | None,
  card: dict[str, Any],
  georeferenced: bool = False,
) -> dict[str, Any]:
  iou = card_test_metrics(card).get("per_class_iou")
  all_pixels = sum(aggregate.pixels_of(totals, info.name) for info in classes)
  recorded = [totals[info.name] for info in classes if totals.get(info.name)]
  unit, divisor = area_display(area_unit, [total.area for total in recorded], georeferenced)
  return {
    "rows": [(info, totals.get(info.name) or ClassTotal(0.0)) for info in classes],
    "all_pixels": all_pixels,
    "area_unit": unit,
    "area_divisor": divisor,
    "has_area": any(total.area is not None for total in recorded),
    "has_confidence": any(total.mean_confidence is not None for total in recorded),
    "iou": iou if isinstance(iou, dict) else {},
    "chart": charts.bar_chart(classes, totals) if all_pixels else None,
  }


def drift_section(drift: Any, classes: list[ClassInfo]) -> dict[str, Any] | None:
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
    change = number(entry.get("change_pp"))
    rows.append(
      {
        "name": name,
        "flagged": name in flagged,
        "colour": colours.get(name),
        "reasons": ", ".join(map(str, entry.get("flagged_by") or [])) or "–",
        "cells": [
          format_percent(number(entry.get("previous_share")), 2),
          format_percent(number(entry.get("current_share")), 2),
          "–" if change is None else f"{change:+.2f} pp",
          format_fixed(number(entry.get("psi"))),
          format_fixed(number(entry.get("ks"))),
        ],
      }
    )
  rule = (
    f"A class is flagged when its share of all pixels moved by more than "
    f"{100 * (number(drift.get('threshold')) or 0.0):g} percentage points, or when the PSI of its "
    f"per-image fractions ({drift.get('psi_bins')} bins) is above {drift.get('psi_threshold')} and above "
    f"sampling noise ({format_fixed(number(drift.get('psi_noise_level')))} for these image counts)."
  )
  images = as_dict(drift.get("images"))
  return {"drift": drift, "images": images, "flagged": sorted(flagged), "rows": rows, "rule": rule}


def ood_section(rule: Any, flagged: aggregate.FlaggedImages, items: list[GalleryItem]) -> dict[str, Any]:
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


def _mask_href(output_dir: str, record: ImageRecord) -> str:
  """The mask relative to the report (which sits in OUT), else its full path."""
  prefix = output_dir.rstrip("/") + "/"
  return record.mask_path[len(prefix) :] if record.mask_path.startswith(prefix) else record.mask_path


def truth_section(
  truth: dict[str, Any], source: str, items: list[GalleryItem], classes: list[ClassInfo], output_dir: str
) -> dict[str, Any]:
  per_class = as_dict(truth.get("per_class_iou"))
  confusion = truth.get("confusion")
  return {
    "truth": truth,
    "source": source,
    "per_class": per_class,
    "confusion": charts.confusion_rows(confusion, classes) if isinstance(confusion, list) and confusion else None,
    "names": [info.name for info in classes],
    "thumbnails": [(item, _mask_href(output_dir, item.record)) for item in items],
  }


def gallery_section(items: list[GalleryItem], stats: aggregate.RunStatistics) -> dict[str, Any]:
  figures = []
  for item in items:
    top = sorted(item.record.fractions.items(), key=lambda pair: -pair[1])[:3]
    figures.append((item, [(name, value) for name, value in top if value > 0]))
  return {"figures": figures, "images": stats.images}


def failures_section(failures: aggregate.FailureSummary) -> dict[str, Any]:
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


def io_section(moved: Any) -> dict[str, Any] | None:
  """Shuffle, read and written bytes (summary.json ``io``, from the run's Beam metrics): one small table."""
  if not isinstance(moved, dict):
    return None
  shuffle = as_dict(moved.get("shuffle"))
  written = as_dict(moved.get("written_bytes"))
  labels = (
    ("refs", "de-duplicating GroupByKey: image refs (incl. TFRecord image bytes)"),
    ("tfrecord_payloads", "… of which TFRecord image bytes"),
    ("stitch_masks", "stitch GroupByKey: tile class-id crops"),
    ("stitch_overlays", "stitch GroupByKey: tile overlay crops"),
  )
  rows: list[tuple[str, str, str | None]] = []
  for key, label in labels:
    entry = as_dict(shuffle.get(key))
    rows.append((label, format_bytes(entry.get("bytes")), format_count(number(entry.get("elements")))))
  rows.append(("shuffle total", format_bytes(shuffle.get("total_bytes")), None))
  rows.append(
    (
      "read (encoded images)",
      format_bytes(moved.get("read_bytes")),
      format_count(number(moved.get("images_read"))),
    )
  )
  parts = ", ".join(
    f"{name} {format_bytes(written.get(name))}"
    for name in (records.MASKS_DIR, records.OVERLAYS_DIR, records.STATS_DIR, records.FAILURES_DIR)
    if number(written.get(name))
  )
  rows.append((f"written ({parts})" if parts else "written", format_bytes(written.get("total")), None))
  return {"source": moved.get("source") or "Beam metrics", "rows": rows}
