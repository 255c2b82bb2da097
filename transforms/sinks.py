"""Everything that writes under OUT, through Beam's FileSystems (local or gs://).

* ``OUT/masks/<key>.png`` or ``.tif`` (``transforms.mask_files``): class id
  per pixel, a palette PNG or, for georeferenced inputs, a Cloud-Optimized
  GeoTIFF. Written to ``OUT/.tmp/`` and renamed into place, so a mask either
  exists complete or not at all; the image's statistics record rides inside
  the mask so ``--skip_existing`` can re-emit it without recomputing.
* ``OUT/overlays/<key>.png`` (``--overlays``): image and class colours mixed.
* ``OUT/polygons/<key>.geojson`` (``--polygons``, ``transforms.polygons``).
* ``OUT/stats/stats.{jsonl,csv,parquet}``: one record per segmented image
  (with ``--truth``, its ``truth`` block; never inside the mask, which
  describes the prediction only and is reused as such by ``--skip_existing``).
* ``OUT/failures/failures.jsonl``: one record per input that failed.
* ``OUT/summary.json``: the run, written last (after the other sinks finish).

File names are deterministic so re-running into the same OUT replaces
rather than duplicates.
"""

import io
import json
import logging
import os
import shutil
import time
import uuid
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.metrics import Metrics
from PIL import Image

from transforms import accounting, progress
from transforms.mask_files import (
  DEFAULT_MASK_COMPRESS_LEVEL,
  GEOTIFF,
  candidate_relpaths,
  decode_mask,
  encode_geotiff,
  encode_mask,
  mask_format_for,
  mask_relpath,
  palette_bytes,
)
from transforms.polygons import PolygonSettings, encode_polygons, polygon_collection, polygons_relpath
from transforms.lookahead import LookaheadDoFn
from transforms.records import (
  DONE,
  FAILED,
  FAILURES_DIR,
  MASKS_DIR,
  OVERLAYS_DIR,
  STAGE_TRUTH,
  STAGE_WRITE,
  STATS_DIR,
  SUMMARY_FILE,
  ImageRef,
  failure_from_exception,
)
from transforms.statistics import image_record
from transforms.truth import TruthError, evaluate_mask, stem

_LOG = logging.getLogger(__name__)
TEMP_DIR = ".tmp"
STATS_FORMATS = ("jsonl", "csv", "parquet")
# Overlays are photographic previews: fastest level.
OVERLAY_COMPRESS_LEVEL = 1


def join(base: str, *parts: str) -> str:
  return FileSystems.join(base.rstrip("/"), *parts)


def overlay_path(output: str, key: str) -> str:
  return join(output, OVERLAYS_DIR, f"{key}.png")


def _ensure_parent(path: str):
  """Object stores have no directories; a local rename needs the parent to exist."""
  if isinstance(FileSystems.get_filesystem(path), LocalFileSystem):
    os.makedirs(os.path.dirname(path), exist_ok=True)


def atomic_write(output: str, path: str, data: bytes, mime_type: str = "application/octet-stream"):
  """Writes ``data`` to a temporary object under OUT/.tmp, then renames it to ``path``."""
  temp = join(output, TEMP_DIR, uuid.uuid4().hex)
  with FileSystems.create(temp, mime_type=mime_type) as handle:
    handle.write(data)
  _ensure_parent(path)
  FileSystems.rename([temp], [path])


def remove_temp_dir(output: str):
  """Drops OUT/.tmp (left-overs of interrupted writes are never valid outputs)."""
  temp = join(output, TEMP_DIR)
  if isinstance(FileSystems.get_filesystem(temp), LocalFileSystem):
    shutil.rmtree(temp, ignore_errors=True)
    return
  try:
    if FileSystems.match([temp + "/*"])[0].metadata_list:
      FileSystems.delete([temp + "/"])
  except Exception as exc:  # pylint: disable=broad-except
    _LOG.warning("could not remove %s: %s", temp, exc)


def truth_outcome(mask_uri, key, truth_uri, class_ids, names):
  """(truth block, None) or (None, Failure at stage ``truth``); (None, None) when the image has no truth."""
  if truth_uri is None:
    return None, None
  try:
    return evaluate_mask(truth_uri, class_ids, names), None
  except TruthError as exc:
    return None, failure_from_exception(mask_uri, key, STAGE_TRUTH, exc, str(exc))
  except Exception as exc:  # pylint: disable=broad-except  (unreadable file, storage errors)
    return None, failure_from_exception(
      mask_uri, key, STAGE_TRUTH, exc, f"cannot read the truth mask {truth_uri}: {exc}"
    )


class WriteMasksFn(LookaheadDoFn):
  """ImageMask -> mask (and overlay) files, then its statistics record.

  With ``write_ahead`` > 0, encoding and writing run on a background thread
  (``transforms.lookahead``) up to that many masks behind, fewer for large
  masks (``write_ahead_pixels``): on the in-process runner this stage shares
  the model's thread, so PNG compression would otherwise stall inference.
  Each mask still yields exactly one record or one failure, in input order,
  and every file is still written with the temp-and-rename of ``atomic_write``.

  With ``truth`` (``--truth``), ``process`` takes the {stem: truth URI} side
  input: the mask is compared with its truth mask here, while it is in hand,
  before anything is written, so an image whose truth mask does not fit it
  fails at stage ``truth`` and leaves no mask; its record gains ``truth``
  (``null`` for an image without a truth mask).
  """

  def __init__(
    self,
    output: str,
    classes,
    model: dict,
    pixel_size=None,
    pixel_unit="m",
    compress_level: int = DEFAULT_MASK_COMPRESS_LEVEL,
    write_ahead: int = 0,
    write_ahead_pixels: Optional[int] = None,
    truth: bool = False,
    ood_rule=None,
    mask_format: str = "png",
    polygons: PolygonSettings = PolygonSettings(),
  ):
    super().__init__(write_ahead, write_ahead_pixels, "deconvseg-write")
    self._ood_rule = ood_rule
    self._mask_format = mask_format
    self._polygons = polygons
    self._output = output
    self._classes = list(classes)
    self._class_names = [entry["name"] for entry in self._classes]
    self._model = dict(model)
    self._pixel_size = pixel_size
    self._pixel_unit = pixel_unit
    self._compress_level = compress_level
    self._truth = truth
    self._segmented = Metrics.counter("deconvseg", "masks_written")
    self._pixels = Metrics.counter("deconvseg", "pixels_segmented")
    self._mask_bytes = accounting.distribution(accounting.WRITTEN_MASKS)
    self._overlay_bytes = accounting.distribution(accounting.WRITTEN_OVERLAYS)

  def setup(self):
    self._palette = palette_bytes(self._classes)
    super().setup()

  def process(self, mask, truth_index=None, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
    truth_uri = truth_index.get(stem(mask.key)) if truth_index else None
    yield from super().process((mask, truth_uri), window, timestamp)

  def _pixels_of(self, item):
    return item[0].width * item[0].height

  def _work(self, item):
    """(record, pixels, None, written) or (None, 0, Failure, ()); never raises (runs on the write-behind thread).

    ``written`` is (mask bytes, overlay bytes or None).
    """
    mask, truth_uri = item
    fmt = mask_format_for(self._mask_format, mask.georef)
    relpath = mask_relpath(mask.key, fmt)
    truth, failure = truth_outcome(mask.uri, mask.key, truth_uri, mask.class_ids, self._class_names)
    if failure is not None:
      return None, 0, failure, ()
    overlay_size = None
    try:
      record = image_record(
        mask,
        self._classes,
        self._model,
        join(self._output, relpath),
        self._pixel_size,
        self._pixel_unit,
        self._ood_rule,
      )
      if self._polygons.enabled:
        # Before the mask: a mask is the mark of a finished image (--skip_existing), so it is written last.
        collection = polygon_collection(
          mask.key, mask.class_ids, self._classes, mask.georef, self._polygons, self._pixel_size, self._pixel_unit
        )
        record["polygons"] = join(self._output, polygons_relpath(mask.key))
        record["polygon_count"] = len(collection["features"])
        atomic_write(self._output, record["polygons"], encode_polygons(collection), "application/geo+json")
      if mask.overlay is not None:
        buffer = io.BytesIO()
        Image.fromarray(mask.overlay).save(buffer, format="PNG", compress_level=OVERLAY_COMPRESS_LEVEL)
        overlay_size = buffer.getbuffer().nbytes
        atomic_write(self._output, overlay_path(self._output, mask.key), buffer.getvalue(), "image/png")
      if fmt == GEOTIFF:
        data = encode_geotiff(mask.class_ids, mask.georef, self._classes, record, self._compress_level)
        mime_type = "image/tiff"
      else:
        data = encode_mask(mask.class_ids, self._palette, record, self._compress_level)
        mime_type = "image/png"
      atomic_write(self._output, join(self._output, relpath), data, mime_type)
    except Exception as exc:  # pylint: disable=broad-except
      return (None, 0, failure_from_exception(mask.uri, mask.key, STAGE_WRITE, exc, f"cannot write outputs: {exc}"), ())
    if self._truth:
      record["truth"] = truth
    return record, mask.width * mask.height, None, (len(data), overlay_size)

  def _outputs(self, outcome):
    record, pixels, failure, written = outcome
    if written:
      self._mask_bytes.update(written[0])
      if written[1] is not None:
        self._overlay_bytes.update(written[1])
    if failure is not None:
      yield beam.pvalue.TaggedOutput(FAILED, failure)
      return
    self._segmented.inc()
    self._pixels.inc(pixels)
    progress.WRITTEN.add(1, pixels)
    yield record


class SkipExistingFn(beam.DoFn):
  """--skip_existing: an input whose mask is already complete re-emits its record.

  A mask only exists after its atomic rename and carries its own record, so
  finding one means that image finished; any doubt (unreadable PNG, another
  model) means it is processed again. With ``overlays``, an image whose
  overlay is missing (say, the earlier run was made without ``--overlays``)
  is processed again too.

  With ``class_names`` (``--truth``), ``process`` takes the {stem: truth URI}
  side input and a reused image gets its ``truth`` from the stored mask's
  pixels, exactly as a new one would; a truth mask that does not fit it is a
  failure at stage ``truth`` (tagged ``FAILED``).
  """

  def __init__(
    self, output: str, model: dict, overlays: bool = False, class_names=None, mask_format="png", polygons=False
  ):
    self._output = output
    self._model = {"name": model.get("name"), "version": model.get("version")}
    self._overlays = overlays
    self._class_names = list(class_names) if class_names else None
    self._mask_format = mask_format
    self._polygons = polygons

  def _companions_missing(self, key: str) -> bool:
    """Whether an output this run asks for besides the mask (overlay, polygons) is missing."""
    if self._overlays and not FileSystems.exists(overlay_path(self._output, key)):
      return True
    return self._polygons and not FileSystems.exists(join(self._output, polygons_relpath(key)))

  def process(self, ref: ImageRef, truth_index=None):
    record, class_ids = None, None
    try:
      if not self._companions_missing(ref.key):
        for relpath in candidate_relpaths(ref.key, self._mask_format):
          path = join(self._output, relpath)
          if FileSystems.exists(path):
            with FileSystems.open(path, compression_type="uncompressed") as handle:
              class_ids, record = decode_mask(handle.read(), with_pixels=self._class_names is not None)
            break
    except Exception:  # pylint: disable=broad-except
      record = None
    if not (record and record.get("model") == self._model and record.get("uri") == ref.uri):
      yield ref
      return
    if self._class_names is not None:
      truth, failure = truth_outcome(
        ref.uri, ref.key, (truth_index or {}).get(stem(ref.key)), class_ids, self._class_names
      )
      if failure is not None:
        yield beam.pvalue.TaggedOutput(FAILED, failure)
        return
      record["truth"] = truth
    yield beam.pvalue.TaggedOutput(DONE, record)


TRUTH_CSV_COLUMNS = ("uri", "pixels", "ignored", "pixel_accuracy", "mean_iou", "confusion")  # "truth.<column>"
OOD_CSV_COLUMNS = ("flagged", "reasons")  # "ood.<column>"; reasons joined by "; "


def _csv_header(classes, truth=False):
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


def _csv_line(record, columns_count):
  import csv  # pylint: disable=import-outside-toplevel

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


def _parquet_schema(classes=None, truth=False):
  """With ``truth``: a nullable ``truth`` struct whose ``per_class_iou`` has one field per class."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel

  class_type = pa.struct(
    [
      ("id", pa.int32()),
      ("name", pa.string()),
      ("pixels", pa.int64()),
      ("fraction", pa.float64()),
      ("area", pa.float64()),
      ("mean_confidence", pa.float64()),
    ]
  )
  extra = []
  if truth:
    extra = [
      (
        "truth",
        pa.struct(
          [
            ("uri", pa.string()),
            ("pixels", pa.int64()),
            ("ignored", pa.int64()),
            ("pixel_accuracy", pa.float64()),
            ("mean_iou", pa.float64()),
            ("per_class_iou", pa.struct([(entry["name"], pa.float64()) for entry in classes])),
            ("confusion", pa.list_(pa.list_(pa.int64()))),
          ]
        ),
      )
    ]
  return pa.schema(
    [
      ("uri", pa.string()),
      ("key", pa.string()),
      ("mask", pa.string()),
      ("width", pa.int32()),
      ("height", pa.int32()),
      ("pixels", pa.int64()),
      ("pixel_size", pa.list_(pa.float64())),
      ("pixel_size_source", pa.string()),
      ("area_unit", pa.string()),
      ("area_method", pa.string()),
      ("crs", pa.string()),
      ("polygons", pa.string()),
      ("polygon_count", pa.int64()),
      ("mean_confidence", pa.float64()),
      ("model", pa.struct([("name", pa.string()), ("version", pa.string())])),
      ("classes", pa.list_(class_type)),
      (
        "ood",
        pa.struct(
          [
            ("flagged", pa.bool_()),
            ("reasons", pa.list_(pa.string())),
            ("band_mean", pa.list_(pa.float64())),
            ("band_std", pa.list_(pa.float64())),
            ("outside_fraction", pa.float64()),
          ]
        ),
      ),
    ]
    + extra
  )


class WriteStats(beam.PTransform):
  """Composite: records -> OUT/stats/stats.<format>; returns the written file names."""

  def __init__(self, output: str, stats_format: str, classes, truth: bool = False):
    super().__init__()
    self._truth = truth
    if stats_format not in STATS_FORMATS:
      raise ValueError(f"unknown stats format {stats_format!r}; use one of {', '.join(STATS_FORMATS)}")
    self._prefix = join(output, STATS_DIR, "stats")
    self._format = stats_format
    self._classes = list(classes)

  def expand(self, records):
    if self._format == "parquet":
      return records | "WriteParquet" >> beam.io.WriteToParquet(
        self._prefix,
        _parquet_schema(self._classes, self._truth),
        file_name_suffix=".parquet",
        num_shards=1,
        shard_name_template="",
      )
    if self._format == "csv":
      header = _csv_header(self._classes, self._truth)
      lines = records | "ToCsv" >> beam.Map(_csv_line, len(header))
      return lines | "WriteCsv" >> beam.io.WriteToText(
        self._prefix, file_name_suffix=".csv", num_shards=1, shard_name_template="", header=",".join(header)
      )
    lines = records | "ToJson" >> beam.Map(lambda r: json.dumps(r, ensure_ascii=False, sort_keys=True))
    return lines | "WriteJsonLines" >> beam.io.WriteToText(
      self._prefix, file_name_suffix=".jsonl", num_shards=1, shard_name_template=""
    )


class WriteFailures(beam.PTransform):
  """Composite: Failure records -> OUT/failures/failures.jsonl."""

  def __init__(self, output: str):
    super().__init__()
    self._prefix = join(output, FAILURES_DIR, "failures")

  def expand(self, failures):
    return (
      failures
      | "ToJson" >> beam.Map(lambda f: json.dumps(f.to_dict(), ensure_ascii=False, sort_keys=True))
      | "WriteJsonLines"
      >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl", num_shards=1, shard_name_template="")
    )


def write_summary(summary: dict, output: str, run_info: dict, stats_files, failure_files):
  """Writes OUT/summary.json once every other sink has finished; removes OUT/.tmp."""
  document = dict(summary)
  document.update(run_info)
  document["end_time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
  document["outputs"] = {
    "masks": f"{MASKS_DIR}/",
    "stats": sorted(stats_files),
    "failures": sorted(failure_files),
    "overlays": f"{OVERLAYS_DIR}/" if run_info.get("options", {}).get("overlays") else None,
  }
  atomic_write(
    output,
    join(output, SUMMARY_FILE),
    json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8"),
    "application/json",
  )
  remove_temp_dir(output)
  return document
