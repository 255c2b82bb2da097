"""The run's record files under OUT: the statistics, the failures and ``summary.json``.

* ``OUT/stats/stats-<run id>-00000-of-00001.{jsonl,csv,parquet}``: one
  record per segmented image (with ``--truth``, its ``truth`` block). The
  CSV columns and the Parquet schema are defined here and read back by
  ``pipeline.report.load``.
* ``OUT/failures/failures-<run id>-00000-of-00001.jsonl``: one record per
  input that failed.
* ``OUT/summary.json``: the run, written last (after the other sinks
  finish) with ``"status": "complete"`` and the launcher's ``run_id``; a
  launcher that saw the run end replaces it once, atomically
  (``store_summary``), with the byte counts and the drift check added.

Records files are named by run, so no run can overwrite another's; a
finished run then removes the records it replaced from earlier runs' files
(``transforms.record_folder.supersede``), so re-running into the same OUT
replaces rather than duplicates.
"""

import io
import json
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam

from transforms.imaging.records import FAILURES_DIR, MASKS_DIR, OVERLAYS_DIR, STATS_DIR, SUMMARY_FILE
from transforms.out_files import atomic_write, join, remove_temp_dir
from transforms.record_folder import SHARD_TEMPLATE, file_prefix, supersede

STATS_FORMATS = ("jsonl", "csv", "parquet")
TRUTH_CSV_COLUMNS = ("uri", "pixels", "ignored", "pixel_accuracy", "mean_iou", "confusion")  # "truth.<column>"
OOD_CSV_COLUMNS = ("flagged", "reasons")  # "ood.<column>"; reasons joined by "; "


def _csv_header(classes: Sequence[dict[str, Any]], truth: bool = False) -> list[str]:
  """With ``truth``: ``truth.<column>`` columns (confusion as JSON rows), then ``truth.iou.<class>``."""
  columns = [
    "uri",
    "key",
    "mask",
    "width",
    "height",
    "pixels",
    "pixel_size_x",
    "pixel_size_y",
    "pixel_size_source",
    "area_unit",
    "area_method",
    "crs",
    "polygons",
    "polygon_count",
    "mean_confidence",
    "model_name",
    "model_version",
  ]
  for entry in classes:
    name = entry["name"]
    columns += [f"{name}_pixels", f"{name}_fraction", f"{name}_area", f"{name}_mean_confidence"]
  columns += [f"ood.{column}" for column in OOD_CSV_COLUMNS]
  if truth:
    columns += [f"truth.{column}" for column in TRUTH_CSV_COLUMNS]
    columns += [f"truth.iou.{entry['name']}" for entry in classes]
  return columns


def _csv_line(record: dict[str, Any], columns_count: int) -> str:
  import csv  # only --stats_format csv needs it

  size = record["pixel_size"] or [None, None]
  row = [
    record["uri"],
    record["key"],
    record["mask"],
    record["width"],
    record["height"],
    record["pixels"],
    size[0],
    size[1],
    record["pixel_size_source"],
    record["area_unit"],
    record.get("area_method"),
    record.get("crs"),
    record.get("polygons"),
    record.get("polygon_count"),
    record["mean_confidence"],
    record["model"]["name"],
    record["model"]["version"],
  ]
  for entry in record["classes"]:
    row += [entry["pixels"], entry["fraction"], entry["area"], entry["mean_confidence"]]
  ood = record.get("ood") or {}
  row += [ood.get("flagged"), "; ".join(ood.get("reasons") or []) if ood else None]
  if "truth" in record:
    truth = record["truth"] or {}
    row += [
      json.dumps(truth.get("confusion"), separators=(",", ":"))
      if column == "confusion" and truth
      else truth.get(column)
      for column in TRUTH_CSV_COLUMNS
    ]
    row += [(truth.get("per_class_iou") or {}).get(entry["name"]) for entry in record["classes"]]
  if len(row) != columns_count:
    raise ValueError(f"record has {len(row)} CSV columns, header has {columns_count}")
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator="").writerow(["" if v is None else v for v in row])
  return buffer.getvalue()


def _fields(pa: Any, spec: str) -> list[tuple[str, Any]]:
  """(name, type) pairs from "name:type ..." with Arrow's primitive type names (int32, float64, string...)."""
  return [(name, getattr(pa, kind)()) for name, kind in (item.split(":") for item in spec.split())]


def _parquet_schema(classes: Sequence[dict[str, Any]] = (), truth: bool = False) -> Any:
  """With ``truth``: a nullable ``truth`` struct whose ``per_class_iou`` has one field per class."""
  import pyarrow as pa  # only --stats_format parquet needs it, and it is slow to import

  class_type = pa.struct(
    _fields(pa, "id:int32 name:string pixels:int64 fraction:float64 area:float64 mean_confidence:float64")
  )
  ood_type = pa.struct(
    _fields(pa, "flagged:bool_")
    + [
      ("reasons", pa.list_(pa.string())),
      ("band_mean", pa.list_(pa.float64())),
      ("band_std", pa.list_(pa.float64())),
    ]
    + _fields(pa, "outside_fraction:float64")
  )
  columns = (
    _fields(pa, "uri:string key:string mask:string width:int32 height:int32 pixels:int64")
    + [("pixel_size", pa.list_(pa.float64()))]
    + _fields(
      pa,
      "pixel_size_source:string area_unit:string area_method:string crs:string polygons:string "
      "polygon_count:int64 mean_confidence:float64",
    )
    + [
      ("model", pa.struct(_fields(pa, "name:string version:string"))),
      ("classes", pa.list_(class_type)),
      ("ood", ood_type),
    ]
  )
  if truth:
    truth_type = pa.struct(
      _fields(pa, "uri:string pixels:int64 ignored:int64 pixel_accuracy:float64 mean_iou:float64")
      + [
        ("per_class_iou", pa.struct([(entry["name"], pa.float64()) for entry in classes])),
        ("confusion", pa.list_(pa.list_(pa.int64()))),
      ]
    )
    columns.append(("truth", truth_type))
  return pa.schema(columns)


class WriteStats(beam.PTransform):
  """Composite: records -> OUT/stats/stats-<run id>-<shard>.<format>; returns the written file names."""

  def __init__(
    self,
    output: str,
    stats_format: str,
    classes: Sequence[dict[str, Any]],
    truth: bool = False,
    run_id: str | None = None,
  ):
    super().__init__()
    self._truth = truth
    if stats_format not in STATS_FORMATS:
      raise ValueError(f"unknown stats format {stats_format!r}; use one of {', '.join(STATS_FORMATS)}")
    self._prefix = file_prefix(output, STATS_DIR, run_id or "")
    self._format = stats_format
    self._classes = list(classes)

  def expand(self, records: Any) -> Any:
    if self._format == "parquet":
      return records | "WriteParquet" >> beam.io.WriteToParquet(
        self._prefix,
        _parquet_schema(self._classes, self._truth),
        file_name_suffix=".parquet",
        num_shards=1,
        shard_name_template=SHARD_TEMPLATE,
      )
    if self._format == "csv":
      header = _csv_header(self._classes, self._truth)
      lines = records | "ToCsv" >> beam.Map(_csv_line, len(header))
      return lines | "WriteCsv" >> beam.io.WriteToText(
        self._prefix, file_name_suffix=".csv", num_shards=1, shard_name_template=SHARD_TEMPLATE, header=",".join(header)
      )
    lines = records | "ToJson" >> beam.Map(lambda r: json.dumps(r, ensure_ascii=False, sort_keys=True))
    return lines | "WriteJsonLines" >> beam.io.WriteToText(
      self._prefix, file_name_suffix=".jsonl", num_shards=1, shard_name_template=SHARD_TEMPLATE
    )


class WriteFailures(beam.PTransform):
  """Composite: Failure records -> OUT/failures/failures-<run id>-<shard>.jsonl."""

  def __init__(self, output: str, run_id: str | None = None):
    super().__init__()
    self._prefix = file_prefix(output, FAILURES_DIR, run_id or "")

  def expand(self, failures: Any) -> Any:
    return (
      failures
      | "ToJson" >> beam.Map(lambda f: json.dumps(f.to_dict(), ensure_ascii=False, sort_keys=True))
      | "WriteJsonLines"
      >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl", num_shards=1, shard_name_template=SHARD_TEMPLATE)
    )


def write_summary(
  summary: Any, output: str, run_info: dict[str, Any], stats_files: Sequence[str], failure_files: Sequence[str]
) -> Any:
  """Removes the records this run replaced from earlier runs' files, then writes OUT/summary.json; removes OUT/.tmp.

  ``status`` is "complete": being the last step, it only runs once every
  output of the pipeline exists. Whether the folder as a whole is finished
  (report written, launcher not stopped) is OUT/run_state.json's to say, and
  ``run_id`` ties the two together.
  """
  supersede(output, stats_files, failure_files)
  document = dict(summary)
  document.update(run_info)
  document["status"] = "complete"
  document["end_time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
  document["outputs"] = {
    "masks": f"{MASKS_DIR}/",
    "stats": sorted(stats_files),
    "failures": sorted(failure_files),
    "overlays": f"{OVERLAYS_DIR}/" if run_info.get("options", {}).get("overlays") else None,
  }
  return store_summary(output, document)


def store_summary(output: str, document: dict[str, Any]) -> dict[str, Any]:
  """Writes ``document`` as OUT/summary.json (temp and rename), then removes OUT/.tmp; returns ``document``."""
  atomic_write(
    output,
    join(output, SUMMARY_FILE),
    json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8"),
    "application/json",
  )
  remove_temp_dir(output)
  return document
