"""Reading a run's output directory: the file layout, and the files read into the records of ``run_records``.

The file layout is as written by ``transforms/record_files.py``; the records
and their fields are ``pipeline.report.run_records``. Everything goes through Beam's ``FileSystems``, so ``gs://`` outputs read like
local ones, and JSON Lines / CSV stats are streamed record by record (Parquet,
being compact, is fetched whole). ``pipeline.drift`` and ``pipeline.evaluate``
read runs with these same functions.

A damaged input never stops the report: readers append a sentence to a
``problems`` list, which the page shows as warnings.
"""

import csv
import io
import json
import posixpath
from collections.abc import Iterable, Iterator
from typing import Any

from apache_beam.io.filesystems import FileSystems
from PIL import Image

from pipeline import run_state
from pipeline.report.run_records import (
  ClassInfo,
  ClassTotal,
  FailureRecord,
  ImageRecord,
  RunSummary,
  as_dict,
  card_classes,
  card_test_metrics,
  failure_record,
  image_record,
  number,
  record_ood,
  record_truth,
  resolve,
  run_summary,
)
from transforms.imaging import records

# The data model lives in pipeline.report.run_records; its names stay importable from here, where readers look.
__all__ = [
  "CARD_FILE",
  "EVALUATION_FILE",
  "FAILURES_PATTERN",
  "ROW_FORMATS",
  "STATS_PATTERN",
  "SUMMARY_FILE",
  "ClassInfo",
  "ClassTotal",
  "FailureRecord",
  "ImageRecord",
  "Incomplete",
  "RunSummary",
  "as_dict",
  "card_classes",
  "card_test_metrics",
  "exists",
  "failure_files",
  "failure_record",
  "image_record",
  "incomplete_run",
  "iter_rows",
  "join",
  "mask_palette",
  "match",
  "number",
  "read_bytes",
  "read_card",
  "read_evaluation",
  "read_json",
  "read_summary",
  "record_ood",
  "record_truth",
  "resolve",
  "row_format",
  "run_summary",
  "stats_files",
]

SUMMARY_FILE = records.SUMMARY_FILE
EVALUATION_FILE = "evaluation.json"  # written by pipeline.evaluate
CARD_FILE = "card.json"
STATS_PATTERN = f"{records.STATS_DIR}/stats*"  # stats-<run id>-00000-of-00001.<format>; stats.<format> before
FAILURES_PATTERN = f"{records.FAILURES_DIR}/failures*"
ROW_FORMATS = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet"}


def join(base: str, *parts: str) -> str:
  return FileSystems.join(base, *parts)


def match(pattern: str) -> list[str]:
  try:
    results = FileSystems.match([pattern])
  except Exception:  # Beam raises BeamIOError for no match on some filesystems.
    return []
  return sorted(metadata.path for result in results for metadata in result.metadata_list)


def exists(path: str) -> bool:
  try:
    return FileSystems.exists(path)
  except Exception:
    return False


def read_bytes(path: str, compression_type: str = "auto") -> bytes:
  with FileSystems.open(path, compression_type=compression_type) as handle:
    return handle.read()


def read_json(path: str) -> Any:
  return json.loads(read_bytes(path, "uncompressed").decode("utf-8"))


def row_format(path: str) -> str | None:
  name = posixpath.basename(path)
  for suffix, file_format in ROW_FORMATS.items():
    if name.endswith(suffix):
      return file_format
  return None


def stats_files(output_dir: str, run: RunSummary) -> list[str]:
  """The stats file(s) this run wrote: as listed in the summary, else the folder's in the run's format.

  The folder holds one file per run (``transforms.record_folder``), so a
  summary that names its own files is what ties the counts to the records.
  """
  if run.stats_files:
    return run.stats_files
  found = [path for path in match(join(output_dir, STATS_PATTERN)) if row_format(path)]
  preferred = [path for path in found if row_format(path) == run.stats_format]
  return preferred or found


def failure_files(output_dir: str, run: RunSummary) -> list[str]:
  if run.failure_files:
    return run.failure_files
  return [path for path in match(join(output_dir, FAILURES_PATTERN)) if row_format(path)]


def iter_rows(paths: Iterable[str], problems: list[str]) -> Iterator[dict[str, Any]]:
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


def _json_lines(path: str, problems: list[str]) -> Iterator[dict[str, Any]]:
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


def read_summary(output_dir: str, problems: list[str]) -> dict[str, Any]:
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


def incomplete_run(output_dir: str, summary: dict[str, Any] | None = None) -> str | None:
  """One sentence when OUT holds a run that is still going, stopped, failed or was killed; else None."""
  if summary is None:
    summary = _read_summary(output_dir, [])
  return run_state.incomplete_reason(output_dir, summary)


def _read_summary(output_dir: str, problems: list[str]) -> dict[str, Any]:
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


def read_card(run: RunSummary, problems: list[str]) -> dict[str, Any]:
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


def read_evaluation(output_dir: str, summary: dict[str, Any], problems: list[str]) -> dict[str, Any] | None:
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


def mask_palette(path: str) -> list[tuple[int, ...]] | None:
  """Class colours from a mask's PNG palette: the sinks write the card's colours into every mask."""
  try:
    with Image.open(io.BytesIO(read_bytes(path, "uncompressed"))) as mask:
      palette = mask.getpalette() if mask.mode == "P" else None
  except Exception:
    return None
  return [tuple(palette[i : i + 3]) for i in range(0, len(palette), 3)] if palette else None
