"""Reading a run's output directory: the file layout, the records and their fields.

Every field name the report depends on lives here, as written by
``transforms/statistics.py`` (records, summary) and ``transforms/record_files.py``
(file layout, CSV columns); the model card as in ``docs/CONTRACTS.md``.
Everything goes through Beam's ``FileSystems``, so ``gs://`` outputs read like
local ones, and JSON Lines / CSV stats are streamed record by record (Parquet,
being compact, is fetched whole). ``pipeline.drift`` and ``pipeline.evaluate``
read runs with these same functions.

A damaged input never stops the report: readers append a sentence to a
``problems`` list, which the page shows as warnings.
"""

import csv
import dataclasses
import io
import json
import math
import posixpath

from apache_beam.io.filesystems import FileSystems
from PIL import Image

from pipeline import run_state
from transforms import records

SUMMARY_FILE = records.SUMMARY_FILE
EVALUATION_FILE = "evaluation.json"  # written by pipeline.evaluate
CARD_FILE = "card.json"
STATS_PATTERN = f"{records.STATS_DIR}/stats*"  # stats-<run id>-00000-of-00001.<format>; stats.<format> before
FAILURES_PATTERN = f"{records.FAILURES_DIR}/failures*"
ROW_FORMATS = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet"}
CSV_CLASS_COLUMNS = ("pixels", "fraction", "area", "mean_confidence")  # "<class>_<column>"


@dataclasses.dataclass
class ClassInfo:
  id: int
  name: str
  color: tuple


@dataclasses.dataclass
class ClassTotal:
  pixels: float
  area: float = None
  mean_confidence: float = None


@dataclasses.dataclass
class RunSummary:
  """The parts of ``summary.json`` the report shows."""

  counts: dict  # "read" / "segmented" / "failed" -> int or None
  start_time: str
  end_time: str
  totals: dict  # class name -> ClassTotal, in class order
  class_ids: dict  # class name -> id
  area_unit: str
  model: dict  # {"name", "version", "path"}
  stats_format: str
  tfrecord_image_feature: str
  stats_files: list
  failure_files: list
  crs: list = dataclasses.field(default_factory=list)  # the images' distinct CRSs (georeferenced inputs)
  area_methods: dict = dataclasses.field(default_factory=dict)  # "projected" / "geodesic" / ... -> images
  engine: dict = dataclasses.field(default_factory=dict)  # engine, precision, runtime, cpu (model.engines)


@dataclasses.dataclass
class ImageRecord:
  """The part of one stats record the report uses."""

  key: str
  uri: str
  width: int
  height: int
  pixels: dict  # class name -> pixel count
  fractions: dict  # class name -> fraction of the image
  areas: dict  # class name -> area in physical units (only when a pixel size was known)
  mean_confidence: float
  mask_path: str
  truth: dict = None  # the record's ``truth`` block (--truth): pixel_accuracy, mean_iou, ...
  ood: dict = None  # the record's ``ood`` block: flagged, reasons, band_mean, band_std
  crs: str = None  # the image's CRS (EPSG:<code> or WKT) when it was georeferenced


@dataclasses.dataclass
class FailureRecord:
  uri: str
  stage: str
  error_type: str
  message: str


def number(value, default=None):
  """``value`` as a finite float, else ``default``: user files hold strings, nulls and NaN alike."""
  try:
    result = float(value)
  except (TypeError, ValueError):
    return default
  return result if math.isfinite(result) else default


def _dict(value):
  return value if isinstance(value, dict) else {}


def run_summary(summary):
  """The fields of a parsed ``summary.json`` the report and its readers need, tolerant of missing ones."""
  counts, outputs, options = _dict(summary.get("counts")), _dict(summary.get("outputs")), _dict(summary.get("options"))
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
    model=_dict(summary.get("model")),
    stats_format=options.get("stats_format"),
    tfrecord_image_feature=options.get("tfrecord_image_feature") or "image/encoded",
    stats_files=[str(path) for path in outputs.get("stats") or []],
    failure_files=[str(path) for path in outputs.get("failures") or []],
    crs=[str(crs) for crs in summary.get("crs") or [] if crs],
    area_methods={str(k): v for k, v in _dict(summary.get("area_methods")).items()},
    engine=_dict(summary.get("engine")),
  )


def card_classes(card):
  classes = []
  for index, entry in enumerate(card.get("classes") or []):
    if isinstance(entry, dict) and isinstance(entry.get("color"), (list, tuple)):
      classes.append(
        ClassInfo(int(entry.get("id", index)), str(entry.get("name", index)), tuple(int(c) for c in entry["color"][:3]))
      )
  return classes


def card_test_metrics(card):
  return _dict(_dict(card.get("metrics")).get("test"))


def resolve(output_dir, path):
  """Paths in records are relative to OUT (``masks/<key>.png``); absolute ones and URLs are kept."""
  if "://" in path or path.startswith("/"):
    return path
  return join(output_dir, path)


def image_record(raw, output_dir):
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
  pixels, fractions, areas = {}, {}, {}
  for name, entry in per_class.items():
    pixels[name] = number(entry.get("pixels"), 0.0)
    fraction = number(entry.get("fraction"))
    fractions[name] = fraction if fraction is not None else (pixels[name] / total if total else 0.0)
    if number(entry.get("area")) is not None:
      areas[name] = number(entry.get("area"))
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


def record_ood(raw):
  """The ``ood`` block of a JSON/Parquet record, or rebuilt from CSV's ``ood.*`` columns; None if unchecked."""
  ood = raw.get("ood")
  if isinstance(ood, dict):
    return ood
  flagged = raw.get("ood.flagged")
  if flagged in (None, ""):
    return None
  reasons = [reason for reason in str(raw.get("ood.reasons") or "").split("; ") if reason]
  return {"flagged": str(flagged).lower() == "true", "reasons": reasons}


def record_truth(raw):
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


def failure_record(raw):
  return FailureRecord(
    uri=str(raw.get("uri", "")),
    stage=str(raw.get("stage", "")),
    error_type=str(raw.get("error_type", "")),
    message=str(raw.get("message", "")),
  )


def join(base, *parts):
  return FileSystems.join(base, *parts)


def match(pattern):
  try:
    results = FileSystems.match([pattern])
  except Exception:  # Beam raises BeamIOError for no match on some filesystems.
    return []
  return sorted(metadata.path for result in results for metadata in result.metadata_list)


def exists(path):
  try:
    return FileSystems.exists(path)
  except Exception:
    return False


def read_bytes(path, compression_type="auto"):
  with FileSystems.open(path, compression_type=compression_type) as handle:
    return handle.read()


def read_json(path):
  return json.loads(read_bytes(path, "uncompressed").decode("utf-8"))


def row_format(path):
  name = posixpath.basename(path)
  for suffix, file_format in ROW_FORMATS.items():
    if name.endswith(suffix):
      return file_format
  return None


def stats_files(output_dir, run):
  """The stats file(s) this run wrote: as listed in the summary, else the folder's in the run's format.

  The folder holds one file per run (``transforms.record_folder``), so a
  summary that names its own files is what ties the counts to the records.
  """
  if run.stats_files:
    return run.stats_files
  found = [path for path in match(join(output_dir, STATS_PATTERN)) if row_format(path)]
  preferred = [path for path in found if row_format(path) == run.stats_format]
  return preferred or found


def failure_files(output_dir, run):
  if run.failure_files:
    return run.failure_files
  return [path for path in match(join(output_dir, FAILURES_PATTERN)) if row_format(path)]


def iter_rows(paths, problems):
  """Stream dict rows from JSON Lines / CSV / Parquet files; a bad line is noted, not fatal."""
  for path in paths:
    file_format = row_format(path)
    try:
      if file_format == "parquet":
        import pyarrow.parquet as pq

        with FileSystems.open(path, compression_type="uncompressed") as handle:
          parquet_file = pq.ParquetFile(io.BytesIO(handle.read()))
          for batch in parquet_file.iter_batches(batch_size=1024):
            yield from batch.to_pylist()
      elif file_format == "csv":
        # The text wrapper is closed here too: dropped open, it would close the file itself (ResourceWarning).
        with FileSystems.open(path) as handle, io.TextIOWrapper(handle, encoding="utf-8", newline="") as text:
          yield from csv.DictReader(text)
      elif file_format == "jsonl":
        yield from _json_lines(path, problems)
      else:
        problems.append(f"{path}: unknown file type, not read")
    except Exception as error:  # one bad file must not hide the rest
      problems.append(f"could not read {path}: {type(error).__name__}: {error}")


def _json_lines(path, problems):
  bad = 0
  with FileSystems.open(path) as handle, io.TextIOWrapper(handle, encoding="utf-8") as text:
    for line in text:
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError:
        row = None
      if isinstance(row, dict):
        yield row
      else:
        bad += 1
  if bad:
    problems.append(f"{bad} unreadable line(s) in {path} were skipped")


def read_summary(output_dir, problems):
  """The parsed ``summary.json`` of a run, or ``{}`` (with the reason in ``problems``).

  When ``run_state.json`` says the folder does not hold a finished run
  (``incomplete_run``), that comes first in ``problems``: it qualifies every
  figure after it.
  """
  summary = _read_summary(output_dir, problems)
  reason = incomplete_run(output_dir, summary)
  if reason:
    problems.insert(0, Incomplete(reason))
  return summary


class Incomplete(str):
  """The problem that says the folder's run did not finish; the page shows it as a banner."""

  incomplete = True


def incomplete_run(output_dir, summary=None):
  """One sentence when OUT holds a run that is still going, stopped, failed or was killed; else None."""
  if summary is None:
    summary = _read_summary(output_dir, [])
  return run_state.incomplete_reason(output_dir, summary)


def _read_summary(output_dir, problems):
  path = join(output_dir, SUMMARY_FILE)
  if not exists(path):
    problems.append(
      f"{SUMMARY_FILE} is missing: the run did not finish (it is written last); "
      "the figures below come from the stats and failure files found"
    )
    return {}
  try:
    summary = read_json(path)
  except Exception as error:
    problems.append(f"could not read {SUMMARY_FILE}: {type(error).__name__}: {error}")
    return {}
  return summary if isinstance(summary, dict) else {}


def read_card(run, problems):
  """The model card: embedded in the summary's model entry, else ``<model path>/card.json``.

  summary.json records the model by name, version and path; the card (class
  colours, test metrics) lives with the model. A card whose name or version
  differs from the run's is not this run's model, so it is not shown.
  """
  if run.model.get("classes") or run.model.get("metrics"):
    return run.model
  path = run.model.get("path")
  if not path:
    return {}
  try:
    card = read_json(join(str(path), CARD_FILE))
  except Exception as error:
    problems.append(
      f"model card {join(str(path), CARD_FILE)} not readable ({type(error).__name__}); "
      "class colours are taken from the masks and test metrics are not shown"
    )
    return {}
  if not isinstance(card, dict):
    return {}
  for field in ("name", "version"):
    if run.model.get(field) is not None and card.get(field) != run.model.get(field):
      problems.append(
        f"the model card at {path} is now {card.get('name')} {card.get('version')}, "
        f"not the run's {run.model.get('name')} {run.model.get('version')}; "
        "its metrics and colours are not shown"
      )
      return {}
  return card


def read_evaluation(output_dir, summary, problems):
  """evaluation.json of this run (pipeline.evaluate), or None; one of an earlier run is ignored."""
  path = join(output_dir, EVALUATION_FILE)
  if not exists(path):
    return None
  try:
    evaluation = read_json(path)
  except Exception as error:
    problems.append(f"could not read {EVALUATION_FILE}: {type(error).__name__}: {error}")
    return None
  if not isinstance(evaluation, dict) or not isinstance(evaluation.get("truth"), dict):
    return None
  if evaluation.get("run_end_time") != summary.get("end_time"):
    problems.append(
      f"{EVALUATION_FILE} scores an earlier run into this directory (ended "
      f"{evaluation.get('run_end_time')}); run python -m pipeline.evaluate again"
    )
    return None
  return evaluation


def mask_palette(path):
  """Class colours from a mask's PNG palette: the sinks write the card's colours into every mask."""
  try:
    with Image.open(io.BytesIO(read_bytes(path, "uncompressed"))) as mask:
      palette = mask.getpalette() if mask.mode == "P" else None
  except Exception:
    return None
  return [tuple(palette[i : i + 3]) for i in range(0, len(palette), 3)] if palette else None
