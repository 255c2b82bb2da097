"""The report's view of a run: typed records built from summary.json, stats rows, failure rows and the model card.

Apart from ``pipeline.report.load``, which finds and reads the files, because
this is the data model they are turned into, and every field name the report
depends on lives here: as written by ``transforms/statistics.py`` (records,
summary) and ``transforms/record_files.py`` (CSV columns); the model card as
in ``docs/CONTRACTS.md``. Builders are tolerant: user files hold strings,
nulls and NaN alike, and a missing field becomes a default, never an error.
"""

import dataclasses
import math
from typing import Any, TypeVar, overload

from apache_beam.io.filesystems import FileSystems

CSV_CLASS_COLUMNS = ("pixels", "fraction", "area", "mean_confidence")  # "<class>_<column>"
_Default = TypeVar("_Default")


@dataclasses.dataclass
class ClassInfo:
  id: int
  name: str
  color: tuple[int, ...]


@dataclasses.dataclass
class ClassTotal:
  pixels: float
  area: float | None = None
  mean_confidence: float | None = None


@dataclasses.dataclass
class RunSummary:
  """The parts of ``summary.json`` the report shows."""

  counts: dict[str, float | None]  # "read" / "segmented" / "failed" -> int or None
  start_time: str | None
  end_time: str | None
  totals: dict[str, ClassTotal]  # class name -> ClassTotal, in class order
  class_ids: dict[str, int]  # class name -> id
  area_unit: str | None
  model: dict[str, Any]  # {"name", "version", "path"}
  stats_format: str | None
  tfrecord_image_feature: str
  stats_files: list[str]
  failure_files: list[str]
  crs: list[str] = dataclasses.field(default_factory=list)  # the images' distinct CRSs (georeferenced inputs)
  area_methods: dict[str, Any] = dataclasses.field(default_factory=dict)  # "projected" / "geodesic" / ... -> images
  engine: dict[str, Any] = dataclasses.field(default_factory=dict)  # engine, precision, runtime, cpu (model.engines)


@dataclasses.dataclass
class ImageRecord:
  """The part of one stats record the report uses."""

  key: str
  uri: str
  width: int
  height: int
  pixels: dict[str, float]  # class name -> pixel count
  fractions: dict[str, float]  # class name -> fraction of the image
  areas: dict[str, float]  # class name -> area in physical units (only when a pixel size was known)
  mean_confidence: float | None
  mask_path: str
  truth: dict[str, Any] | None = None  # the record's ``truth`` block (--truth): pixel_accuracy, mean_iou, ...
  ood: dict[str, Any] | None = None  # the record's ``ood`` block: flagged, reasons, band_mean, band_std
  crs: str | None = None  # the image's CRS (EPSG:<code> or WKT) when it was georeferenced


@dataclasses.dataclass
class FailureRecord:
  uri: str
  stage: str
  error_type: str
  message: str


@overload
def number(value: Any) -> float | None: ...
@overload
def number(value: Any, default: _Default) -> float | _Default: ...
def number(value: Any, default: Any = None) -> Any:
  """``value`` as a finite float, else ``default``: user files hold strings, nulls and NaN alike."""
  try:
    result = float(value)
  except (TypeError, ValueError):
    return default
  return result if math.isfinite(result) else default


def as_dict(value: Any) -> dict[str, Any]:
  """``value`` if it is a dict, else an empty one: a JSON field that should hold an object."""
  return value if isinstance(value, dict) else {}


def run_summary(summary: dict[str, Any]) -> RunSummary:
  """The fields of a parsed ``summary.json`` the report and its readers need, tolerant of missing ones."""
  counts, outputs, options = (
    as_dict(summary.get("counts")),
    as_dict(summary.get("outputs")),
    as_dict(summary.get("options")),
  )
  entries = [entry for entry in summary.get("classes") or [] if isinstance(entry, dict)]
  unit = summary.get("area_unit")
  return RunSummary(
    counts={name: number(counts.get(name)) for name in ("read", "segmented", "failed")},
    start_time=summary.get("start_time"),
    end_time=summary.get("end_time"),
    totals={
      str(entry.get("name")): ClassTotal(
        number(entry.get("pixels"), 0.0), number(entry.get("area")), number(entry.get("mean_confidence"))
      )
      for entry in entries
    },
    class_ids={str(entry.get("name")): int(number(entry.get("id"), index)) for index, entry in enumerate(entries)},
    area_unit=unit if isinstance(unit, str) else (", ".join(map(str, unit)) if unit else None),
    model=as_dict(summary.get("model")),
    stats_format=options.get("stats_format"),
    tfrecord_image_feature=options.get("tfrecord_image_feature") or "image/encoded",
    stats_files=[str(path) for path in outputs.get("stats") or []],
    failure_files=[str(path) for path in outputs.get("failures") or []],
    crs=[str(crs) for crs in summary.get("crs") or [] if crs],
    area_methods={str(k): v for k, v in as_dict(summary.get("area_methods")).items()},
    engine=as_dict(summary.get("engine")),
  )


def card_classes(card: dict[str, Any]) -> list[ClassInfo]:
  classes = []
  for index, entry in enumerate(card.get("classes") or []):
    if isinstance(entry, dict) and isinstance(entry.get("color"), (list, tuple)):
      classes.append(
        ClassInfo(int(entry.get("id", index)), str(entry.get("name", index)), tuple(int(c) for c in entry["color"][:3]))
      )
  return classes


def card_test_metrics(card: dict[str, Any]) -> dict[str, Any]:
  return as_dict(as_dict(card.get("metrics")).get("test"))


def resolve(output_dir: str, path: str) -> str:
  """Paths in records are relative to OUT (``masks/<key>.png``); absolute ones and URLs are kept."""
  if "://" in path or path.startswith("/"):
    return path
  return FileSystems.join(output_dir, path)


def image_record(raw: dict[str, Any], output_dir: str) -> ImageRecord:
  """One stats row (JSON, Parquet or CSV) as an ImageRecord."""
  key = str(raw.get("key", ""))
  width, height = int(number(raw.get("width"), 0)), int(number(raw.get("height"), 0))
  classes = raw.get("classes")
  if isinstance(classes, list):
    per_class = {str(entry.get("name")): entry for entry in classes if isinstance(entry, dict)}
  else:  # CSV: one "<class>_<column>" group of columns per class.
    suffix = "_fraction"
    per_class = {
      column[: -len(suffix)]: {name: raw.get(f"{column[: -len(suffix)]}_{name}") for name in CSV_CLASS_COLUMNS}
      for column in raw
      if column.endswith(suffix)
    }
  total = width * height
  pixels: dict[str, float] = {}
  fractions: dict[str, float] = {}
  areas: dict[str, float] = {}
  for name, entry in per_class.items():
    pixels[name] = number(entry.get("pixels"), 0.0)
    fraction = number(entry.get("fraction"))
    fractions[name] = fraction if fraction is not None else (pixels[name] / total if total else 0.0)
    area = number(entry.get("area"))
    if area is not None:
      areas[name] = area
  return ImageRecord(
    key=key,
    uri=str(raw.get("uri") or ""),
    width=width,
    height=height,
    pixels=pixels,
    fractions=fractions,
    areas=areas,
    mean_confidence=number(raw.get("mean_confidence")),
    mask_path=resolve(output_dir, str(raw.get("mask") or f"masks/{key}.png")),
    truth=record_truth(raw),
    ood=record_ood(raw),
    crs=str(raw["crs"]) if raw.get("crs") else None,
  )


def record_ood(raw: dict[str, Any]) -> dict[str, Any] | None:
  """The ``ood`` block of a JSON/Parquet record, or rebuilt from CSV's ``ood.*`` columns; None if unchecked."""
  ood = raw.get("ood")
  if isinstance(ood, dict):
    return ood
  flagged = raw.get("ood.flagged")
  if flagged in (None, ""):
    return None
  reasons = [reason for reason in str(raw.get("ood.reasons") or "").split("; ") if reason]
  return {"flagged": str(flagged).lower() == "true", "reasons": reasons}


def record_truth(raw: dict[str, Any]) -> dict[str, Any] | None:
  """The ``truth`` block of a JSON/Parquet record, or rebuilt from CSV's ``truth.*`` columns."""
  truth = raw.get("truth")
  if isinstance(truth, dict):
    return truth
  if raw.get("truth.uri"):
    prefix = "truth.iou."
    return {
      "uri": raw["truth.uri"],
      "pixel_accuracy": number(raw.get("truth.pixel_accuracy")),
      "mean_iou": number(raw.get("truth.mean_iou")),
      "per_class_iou": {
        column[len(prefix) :]: number(value) for column, value in raw.items() if column.startswith(prefix)
      },
    }
  return None


def failure_record(raw: dict[str, Any]) -> FailureRecord:
  return FailureRecord(
    uri=str(raw.get("uri", "")),
    stage=str(raw.get("stage", "")),
    error_type=str(raw.get("error_type", "")),
    message=str(raw.get("message", "")),
  )
