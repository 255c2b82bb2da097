"""One self-contained HTML page that shows what a segmentation run did.

People judge a run by looking at it, so this turns the run's output directory
(``summary.json``, ``stats/``, ``masks/``, ``failures/``) into
``OUT/report.html``: the run summary and the model's test metrics, per-class
area totals as a bar chart, the distribution of per-image class fractions, a
gallery of images with their masks blended over them, and the failures table.
When the run was scored against ground truth (``--truth``, or afterwards
``python -m pipeline.evaluate``, whose ``evaluation.json`` then wins), it also
shows the run's confusion matrix as a heatmap and the worst images first.
Images the out-of-distribution check flagged (``transforms.ood``: unlike what
the model was trained and tested on, so its masks deserve doubt) are listed
with their reasons and thumbnails.

The page opens offline and can be mailed around: no scripts, no external
CSS or fonts, charts are inline SVG and images are downscaled thumbnails
inlined as ``data:`` URIs. A Content-Security-Policy forbids anything else, so
even a failure message crafted to look like HTML (they come from user files
and are escaped anyway) could not load or run anything.

Everything is read through Beam's ``FileSystems``, so ``gs://`` outputs work
like local ones. JSON Lines and CSV stats are streamed record by record
(Parquet, being compact, is fetched whole): totals, fraction histograms and a
deterministic gallery sample (the ``max_gallery`` keys with the smallest hash)
use memory independent of the number of images.

    python -m pipeline.report OUT [--out OUT/report.html] [--max_gallery N] [--thumbnail_size PX]
"""
import argparse
import base64
import csv
import dataclasses
import datetime
import hashlib
import heapq
import html
import io
import json
import logging
import math
import posixpath
import re
import sys

import numpy as np
from apache_beam.io.filesystems import FileSystems
from PIL import Image, ImageOps

from transforms.decode import decode_image, to_rgb
from transforms.display import display_stretch, to_display
from transforms.input_spec import DEFAULT_SPEC, InputSpec
from transforms.read import iter_tfrecords

LOGGER = logging.getLogger(__name__)

REPORT_NAME = "report.html"
DEFAULT_MAX_GALLERY = 12
DEFAULT_THUMBNAIL_SIZE = 256
MAX_FAILURE_ROWS = 500
MAX_MESSAGE_CHARS = 2000
FRACTION_BINS = 50
OVERLAY_ALPHA = 0.5
# Colours for classes when the run did not record a model card.
FALLBACK_PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


# --------------------------------------------------------------------------
# The output contract: every field name the report depends on lives here.
# Names as written by transforms/statistics.py (records, summary) and
# transforms/sinks.py (file layout, CSV columns); the card as in docs/CONTRACTS.md.
# --------------------------------------------------------------------------

SUMMARY_FILE = "summary.json"
EVALUATION_FILE = "evaluation.json"  # written by pipeline.evaluate
MAX_WORST_IMAGES = 10
MAX_FLAGGED_IMAGES = 20  # as many as summary.json's ood.flagged_keys
CARD_FILE = "card.json"
STATS_PATTERN = "stats/stats.*"
FAILURES_PATTERN = "failures/failures.*"
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

    counts: dict              # "read" / "segmented" / "failed" -> int or None
    start_time: str
    end_time: str
    totals: dict              # class name -> ClassTotal, in class order
    class_ids: dict           # class name -> id
    area_unit: str
    model: dict               # {"name", "version", "path"}
    stats_format: str
    tfrecord_image_feature: str
    stats_files: list
    failure_files: list


@dataclasses.dataclass
class ImageRecord:
    """The part of one stats record the report uses."""

    key: str
    uri: str
    width: int
    height: int
    pixels: dict          # class name -> pixel count
    fractions: dict       # class name -> fraction of the image
    areas: dict           # class name -> area in physical units (only when a pixel size was known)
    mean_confidence: float
    mask_path: str
    truth: dict = None    # the record's ``truth`` block (--truth): pixel_accuracy, mean_iou, ...
    ood: dict = None      # the record's ``ood`` block: flagged, reasons, band_mean, band_std


@dataclasses.dataclass
class FailureRecord:
    uri: str
    stage: str
    error_type: str
    message: str


def _number(value, default=None):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _run_summary(summary):
    counts = summary.get("counts") if isinstance(summary.get("counts"), dict) else {}
    entries = [entry for entry in summary.get("classes") or [] if isinstance(entry, dict)]
    outputs = summary.get("outputs") if isinstance(summary.get("outputs"), dict) else {}
    options = summary.get("options") if isinstance(summary.get("options"), dict) else {}
    unit = summary.get("area_unit")
    return RunSummary(
        counts={name: _number(counts.get(name)) for name in ("read", "segmented", "failed")},
        start_time=summary.get("start_time"),
        end_time=summary.get("end_time"),
        totals={str(entry.get("name")): ClassTotal(_number(entry.get("pixels"), 0.0), _number(entry.get("area")),
                                                   _number(entry.get("mean_confidence")))
                for entry in entries},
        class_ids={str(entry.get("name")): int(_number(entry.get("id"), index)) for index, entry in enumerate(entries)},
        area_unit=unit if isinstance(unit, str) else (", ".join(map(str, unit)) if unit else None),
        model=summary.get("model") if isinstance(summary.get("model"), dict) else {},
        stats_format=options.get("stats_format"),
        tfrecord_image_feature=options.get("tfrecord_image_feature") or "image/encoded",
        stats_files=[str(path) for path in outputs.get("stats") or []],
        failure_files=[str(path) for path in outputs.get("failures") or []],
    )


def _card_classes(card):
    classes = []
    for index, entry in enumerate(card.get("classes") or []):
        if isinstance(entry, dict) and isinstance(entry.get("color"), (list, tuple)):
            classes.append(ClassInfo(int(entry.get("id", index)), str(entry.get("name", index)),
                                     tuple(int(c) for c in entry["color"][:3])))
    return classes


def _card_test_metrics(card):
    metrics = card.get("metrics") if isinstance(card.get("metrics"), dict) else {}
    return metrics.get("test") if isinstance(metrics.get("test"), dict) else {}


def _resolve(output_dir, path):
    """Paths in records are relative to OUT (``masks/<key>.png``); absolute ones and URLs are kept."""
    if "://" in path or path.startswith("/"):
        return path
    return _join(output_dir, path)


def _image_record(raw, output_dir):
    key = str(raw.get("key", ""))
    width, height = int(_number(raw.get("width"), 0)), int(_number(raw.get("height"), 0))
    classes = raw.get("classes")
    if isinstance(classes, list):
        per_class = {str(entry.get("name")): entry for entry in classes if isinstance(entry, dict)}
    else:  # CSV: one "<class>_<column>" group of columns per class.
        suffix = "_fraction"
        per_class = {column[:-len(suffix)]: {name: raw.get(f"{column[:-len(suffix)]}_{name}")
                                             for name in CSV_CLASS_COLUMNS}
                     for column in raw if column.endswith(suffix)}
    total = width * height
    pixels, fractions, areas = {}, {}, {}
    for name, entry in per_class.items():
        pixels[name] = _number(entry.get("pixels"), 0.0)
        fraction = _number(entry.get("fraction"))
        fractions[name] = fraction if fraction is not None else (pixels[name] / total if total else 0.0)
        if _number(entry.get("area")) is not None:
            areas[name] = _number(entry.get("area"))
    return ImageRecord(
        key=key,
        uri=str(raw.get("uri") or ""),
        width=width,
        height=height,
        pixels=pixels,
        fractions=fractions,
        areas=areas,
        mean_confidence=_number(raw.get("mean_confidence")),
        mask_path=_resolve(output_dir, str(raw.get("mask") or f"masks/{key}.png")),
        truth=_record_truth(raw),
        ood=_record_ood(raw),
    )


def _record_ood(raw):
    """The ``ood`` block of a JSON/Parquet record, or rebuilt from CSV's ``ood.*`` columns; None if unchecked."""
    ood = raw.get("ood")
    if isinstance(ood, dict):
        return ood
    flagged = raw.get("ood.flagged")
    if flagged in (None, ""):
        return None
    reasons = [reason for reason in str(raw.get("ood.reasons") or "").split("; ") if reason]
    return {"flagged": str(flagged).lower() == "true", "reasons": reasons}


def _record_truth(raw):
    """The ``truth`` block of a JSON/Parquet record, or rebuilt from CSV's ``truth.*`` columns."""
    truth = raw.get("truth")
    if isinstance(truth, dict):
        return truth
    if raw.get("truth.uri"):
        prefix = "truth.iou."
        return {"uri": raw["truth.uri"], "pixel_accuracy": _number(raw.get("truth.pixel_accuracy")),
                "mean_iou": _number(raw.get("truth.mean_iou")),
                "per_class_iou": {column[len(prefix):]: _number(value) for column, value in raw.items()
                                  if column.startswith(prefix)}}
    return None


def _failure_record(raw):
    return FailureRecord(uri=str(raw.get("uri", "")), stage=str(raw.get("stage", "")),
                         error_type=str(raw.get("error_type", "")), message=str(raw.get("message", "")))


# --------------------------------------------------------------------------
# Reading through FileSystems.
# --------------------------------------------------------------------------

def _join(base, *parts):
    return FileSystems.join(base, *parts)


def _match(pattern):
    try:
        results = FileSystems.match([pattern])
    except Exception:  # Beam raises BeamIOError for a pattern with no match on some filesystems.
        return []
    return sorted(metadata.path for result in results for metadata in result.metadata_list)


def _exists(path):
    try:
        return FileSystems.exists(path)
    except Exception:
        return False


def _read_bytes(path, compression_type="auto"):
    with FileSystems.open(path, compression_type=compression_type) as handle:
        return handle.read()


def _row_format(path):
    name = posixpath.basename(path)
    for suffix, file_format in ROW_FORMATS.items():
        if name.endswith(suffix):
            return file_format
    return None


def _stats_files(output_dir, run):
    """The stats file(s) this run wrote: as listed in the summary, else the one matching its format.

    A re-run with another ``--stats_format`` leaves the old file beside the new
    one, so globbing alone could read a stale run.
    """
    if run.stats_files:
        return run.stats_files
    found = [path for path in _match(_join(output_dir, STATS_PATTERN)) if _row_format(path)]
    preferred = [path for path in found if _row_format(path) == run.stats_format]
    return preferred or found[:1]


def _failure_files(output_dir, run):
    if run.failure_files:
        return run.failure_files
    return [path for path in _match(_join(output_dir, FAILURES_PATTERN)) if _row_format(path)]


def _iter_rows(paths, problems):
    """Stream dict rows from JSON Lines / CSV / Parquet files; a bad line is noted, not fatal."""
    for path in paths:
        file_format = _row_format(path)
        try:
            if file_format == "parquet":
                import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
                with FileSystems.open(path, compression_type="uncompressed") as handle:
                    parquet_file = pq.ParquetFile(io.BytesIO(handle.read()))
                    for batch in parquet_file.iter_batches(batch_size=1024):
                        yield from batch.to_pylist()
            elif file_format == "csv":
                with FileSystems.open(path) as handle:
                    yield from csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline=""))
            elif file_format == "jsonl":
                bad = 0
                with FileSystems.open(path) as handle:
                    for line in io.TextIOWrapper(handle, encoding="utf-8"):
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
            else:
                problems.append(f"{path}: unknown file type, not read")
        except Exception as error:  # pylint: disable=broad-except  # one bad file must not hide the rest
            problems.append(f"could not read {path}: {type(error).__name__}: {error}")


def _read_json(path):
    return json.loads(_read_bytes(path, "uncompressed").decode("utf-8"))


def _read_summary(output_dir, problems):
    path = _join(output_dir, SUMMARY_FILE)
    if not _exists(path):
        problems.append(f"{SUMMARY_FILE} is missing: the run did not finish (it is written last); "
                        "the figures below come from the stats and failure files found")
        return {}
    try:
        summary = _read_json(path)
    except Exception as error:  # pylint: disable=broad-except
        problems.append(f"could not read {SUMMARY_FILE}: {type(error).__name__}: {error}")
        return {}
    return summary if isinstance(summary, dict) else {}


def _read_card(run, problems):
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
        card = _read_json(_join(str(path), CARD_FILE))
    except Exception as error:  # pylint: disable=broad-except
        problems.append(f"model card {_join(str(path), CARD_FILE)} not readable ({type(error).__name__}); "
                        "class colours are taken from the masks and test metrics are not shown")
        return {}
    if not isinstance(card, dict):
        return {}
    for field in ("name", "version"):
        if run.model.get(field) is not None and card.get(field) != run.model.get(field):
            problems.append(f"the model card at {path} is now {card.get('name')} {card.get('version')}, "
                            f"not the run's {run.model.get('name')} {run.model.get('version')}; "
                            "its metrics and colours are not shown")
            return {}
    return card


# --------------------------------------------------------------------------
# Streaming aggregation.
# --------------------------------------------------------------------------

class _FractionDistribution:
    """Histogram, mean, min and max of one class's per-image fraction, in constant memory."""

    def __init__(self):
        self.counts = [0] * FRACTION_BINS
        self.n = 0
        self.present = 0
        self.total = 0.0
        self.low = 1.0
        self.high = 0.0

    def add(self, fraction):
        fraction = min(max(fraction, 0.0), 1.0)
        self.counts[min(int(fraction * FRACTION_BINS), FRACTION_BINS - 1)] += 1
        self.n += 1
        self.present += fraction > 0
        self.total += fraction
        self.low = min(self.low, fraction)
        self.high = max(self.high, fraction)

    @property
    def mean(self):
        return self.total / self.n if self.n else 0.0

    def quantile(self, q):
        """Quantile interpolated inside the histogram bin (accurate to 1/FRACTION_BINS), clamped to min/max."""
        if not self.n:
            return 0.0
        target = q * self.n
        cumulative = 0
        for index, count in enumerate(self.counts):
            if count and cumulative + count >= target:
                value = (index + (target - cumulative) / count) / FRACTION_BINS
                return min(max(value, self.low), self.high)
            cumulative += count
        return self.high


class _RunStatistics:
    """Everything the report needs from the stats records, gathered in one pass."""

    def __init__(self, max_gallery):
        self.max_gallery = max_gallery
        self.images = 0
        self.pixels = {}
        self.areas = {}
        self.distributions = {}
        self.confidence_total = 0.0
        self.confidence_images = 0
        self.first_mask = None
        self._sample = []  # max-heap (negated hash) of the smallest-hash records; ties never compare records

    def add(self, record):
        self.images += 1
        self.first_mask = self.first_mask or record.mask_path
        for name, pixels in record.pixels.items():
            self.pixels[name] = self.pixels.get(name, 0.0) + pixels
        for name, area in record.areas.items():
            self.areas[name] = self.areas.get(name, 0.0) + area
        if record.mean_confidence is not None:
            self.confidence_total += record.mean_confidence
            self.confidence_images += 1
        for name, fraction in record.fractions.items():
            self.distributions.setdefault(name, _FractionDistribution())
        # A class missing from a record (written by another model's run) counts as fraction 0.
        for name, distribution in self.distributions.items():
            distribution.add(record.fractions.get(name, 0.0))
        if self.max_gallery > 0:
            rank = int.from_bytes(hashlib.sha256(record.key.encode("utf-8")).digest()[:8], "big")
            entry = (-rank, record.key, self.images, record)
            if len(self._sample) < self.max_gallery:
                heapq.heappush(self._sample, entry)
            elif -rank > self._sample[0][0]:
                heapq.heapreplace(self._sample, entry)

    def finish_distributions(self):
        """Back-fill zeros for classes first seen after some images (so every class has n == images)."""
        for distribution in self.distributions.values():
            missing = self.images - distribution.n
            if missing > 0:
                distribution.counts[0] += missing
                distribution.n += missing
                distribution.low = 0.0

    def gallery(self):
        return [entry[-1] for entry in sorted(self._sample, key=lambda entry: entry[1:3])]


class _WorstImages:
    """The images with the lowest mean IoU (then pixel accuracy), in constant memory."""

    def __init__(self, limit):
        self.limit = limit
        self._heap = []  # max-heap by score (negated): the best of the kept images is on top
        self._seen = 0

    def add(self, record):
        truth = record.truth or {}
        mean_iou, accuracy = _number(truth.get("mean_iou")), _number(truth.get("pixel_accuracy"))
        if mean_iou is None or accuracy is None or self.limit <= 0:
            return  # no labelled pixels: nothing to rank
        self._seen += 1
        entry = (-mean_iou, -accuracy, -self._seen, record)
        if len(self._heap) < self.limit:
            heapq.heappush(self._heap, entry)
        elif entry[:3] > self._heap[0][:3]:
            heapq.heapreplace(self._heap, entry)

    def worst_first(self):
        return [entry[-1] for entry in sorted(self._heap, key=lambda entry: (-entry[0], -entry[1], -entry[2]))]


class _FlaggedImages:
    """Counts the checked and flagged images; keeps the flagged ones with the smallest keys, as summary.json lists them."""

    def __init__(self, limit):
        self.limit = limit
        self.checked = 0
        self.flagged = 0
        self._kept = []

    def add(self, record):
        if not isinstance(record.ood, dict):
            return
        self.checked += 1
        if record.ood.get("flagged"):
            self.flagged += 1
            self._kept = sorted(self._kept + [record], key=lambda kept: kept.key)[:self.limit]

    def first(self):
        return list(self._kept)


def _read_evaluation(output_dir, summary, problems):
    """evaluation.json of this run (pipeline.evaluate), or None; one of an earlier run is ignored."""
    path = _join(output_dir, EVALUATION_FILE)
    if not _exists(path):
        return None
    try:
        evaluation = _read_json(path)
    except Exception as error:  # pylint: disable=broad-except
        problems.append(f"could not read {EVALUATION_FILE}: {type(error).__name__}: {error}")
        return None
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get("truth"), dict):
        return None
    if evaluation.get("run_end_time") != summary.get("end_time"):
        problems.append(f"{EVALUATION_FILE} scores an earlier run into this directory (ended "
                        f"{evaluation.get('run_end_time')}); run python -m pipeline.evaluate again")
        return None
    return evaluation


class _FailureSummary:
    """Failure counts by stage and error type, plus the first rows for the table."""

    def __init__(self, max_rows):
        self.max_rows = max_rows
        self.total = 0
        self.by_kind = {}
        self.rows = []

    def add(self, failure):
        self.total += 1
        kind = (failure.stage, failure.error_type)
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if len(self.rows) < self.max_rows:
            self.rows.append(failure)


# --------------------------------------------------------------------------
# Images.
# --------------------------------------------------------------------------

def _palette(classes):
    palette = np.zeros((256, 3), dtype=np.uint8)
    for info in classes:
        if 0 <= info.id < 256:
            palette[info.id] = info.color
    return palette


def _data_uri(image, fmt):
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buffer, "JPEG", quality=82, optimize=True)
        mime = "image/jpeg"
    else:
        image.save(buffer, "PNG", optimize=True)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _load_mask(path, palette, size):
    """The mask downscaled (nearest: no invented classes), then coloured with the class palette."""
    with Image.open(io.BytesIO(_read_bytes(path, "uncompressed"))) as mask:
        if mask.mode not in ("P", "L"):  # not a class-id image; show it as it is
            coloured = mask.convert("RGB")
            coloured.thumbnail((size, size), Image.NEAREST)
            return coloured
        small = mask.copy()
    small.thumbnail((size, size), Image.NEAREST)
    return Image.fromarray(palette[np.asarray(small)], "RGB")


def _varint(data, pos):
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _proto_fields(data):
    """(field number, wire type, value) of one protobuf message, enough to walk a tf.train.Example."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _example_bytes_feature(example, name):
    """The first bytes value of feature ``name`` (Example.features.feature[name].bytes_list.value[0]).

    A hand-rolled walk of the wire format, so showing three shard records
    does not cost the report a TensorFlow import.
    """
    for field, wire, features in _proto_fields(memoryview(example)):
        if (field, wire) != (1, 2):
            continue
        for entry_field, entry_wire, entry in _proto_fields(features):
            if (entry_field, entry_wire) != (1, 2):
                continue
            key, feature = None, b""
            for item_field, _, value in _proto_fields(entry):
                if item_field == 1:
                    key = bytes(value).decode("utf-8", "replace")
                elif item_field == 2:
                    feature = value
            if key != name:
                continue
            for kind, kind_wire, values in _proto_fields(feature):
                if (kind, kind_wire) == (1, 2):  # bytes_list
                    for value_field, _, value in _proto_fields(values):
                        if value_field == 1:
                            return bytes(value)
    raise ValueError(f"the record has no bytes feature {name!r}")


def _read_tfrecord_image(uri, image_feature):
    """Encoded image bytes of ``<shard>#<index>``, the URI the pipeline gives TFRecord inputs."""
    path, _, index = uri.rpartition("#")
    with FileSystems.open(path) as stream:  # .gz shards are decompressed by extension
        for position, payload in iter_tfrecords(stream):
            if position == int(index):
                if isinstance(payload, Exception):
                    raise payload
                return _example_bytes_feature(payload, image_feature)
    raise ValueError(f"{path} has no record {index}")


def _source_bytes(uri, image_feature):
    if re.fullmatch(r".+#\d+", uri) and not _exists(uri):
        return _read_tfrecord_image(uri, image_feature)
    return _read_bytes(uri, "uncompressed")


def _input_spec(run, card):
    """What the run's model takes (card["input"]), so thumbnails show what it saw; RGB uint8 when unknown."""
    for source in (run.model.get("card"), card):
        if isinstance(source, dict) and isinstance(source.get("input"), dict):
            try:
                return InputSpec.from_card(source)
            except ValueError:
                continue
    return DEFAULT_SPEC


def _load_source(uri, size, image_feature, spec=DEFAULT_SPEC):
    """The input as the pipeline saw it (EXIF orientation applied, same mode rule), downscaled.

    Other inputs than RGB uint8 are decoded exactly as the pipeline decodes
    them for the model and drawn with the overlays' display rule
    (``transforms.display``: grey replicated, first three bands, 16-bit
    stretched by the image's own percentiles).
    """
    data = _source_bytes(uri, image_feature)
    if spec != DEFAULT_SPEC:
        pixels, _ = decode_image(data, sys.maxsize, spec)
        image = Image.fromarray(to_display(pixels, display_stretch(pixels)), "RGB")
    else:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))  # JPEG decodes at reduced scale: cheap for big tiles.
            image = ImageOps.exif_transpose(image)
            image = Image.fromarray(to_rgb(image), "RGB")
    image.thumbnail((size, size), Image.BILINEAR)
    return image


@dataclasses.dataclass
class _GalleryItem:
    record: ImageRecord
    image_uri: str       # data URI of the source thumbnail, or "" when it could not be read
    overlay_uri: str     # mask blended over the source, or the mask alone
    note: str


def _gallery_item(record, palette, size, image_feature, spec=DEFAULT_SPEC):
    try:
        mask = _load_mask(record.mask_path, palette, size)
    except Exception as error:
        return _GalleryItem(record, "", "", f"mask unreadable: {type(error).__name__}: {error}")
    try:
        source = _load_source(record.uri, size, image_feature, spec) if record.uri else None
        if source is None:
            raise ValueError("no source URI in the stats record")
    except Exception as error:
        return _GalleryItem(record, "", _data_uri(mask, "PNG"),
                            f"source unreadable ({type(error).__name__}: {error}); showing the mask only")
    mask = mask.resize(source.size, Image.NEAREST)
    overlay = Image.blend(source, mask, OVERLAY_ALPHA)
    return _GalleryItem(record, _data_uri(source, "JPEG"), _data_uri(overlay, "JPEG"), "")


# --------------------------------------------------------------------------
# HTML.
# --------------------------------------------------------------------------

def _e(value):
    return html.escape(str(value), quote=True)


def _rgb(color):
    return "rgb({},{},{})".format(*color)


def _format_count(value):
    if value is None:
        return "–"
    return f"{int(round(value)):,}"


def _format_number(value, digits=3):
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _format_fixed(value):
    """Scores in [0, 1] with a fixed three decimals, so a column of them lines up."""
    return "–" if value is None else f"{value:.3f}"


def _format_percent(value, digits=1):
    return "–" if value is None else f"{100.0 * value:.{digits}f}%"


def _format_duration(seconds):
    if seconds is None:
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {seconds:02d} s" if hours else f"{minutes} min {seconds:02d} s"


def _parse_time(value):
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


STYLE = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#222;
background:#fff;font-size:14px;line-height:1.4}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 12px}.warn{background:#fff4e0;border:1px solid #f0c070;padding:8px 12px;margin:8px 0}
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}td.num,th.num{text-align:right}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card .v{font-size:22px;font-weight:bold}.card .l{color:#666;font-size:12px}
.swatch{display:inline-block;width:14px;height:14px;border:1px solid #555;vertical-align:middle;margin-right:6px}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:6px 0 12px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:14px}
figure.sample{margin:0;border:1px solid #ddd;border-radius:6px;padding:6px;background:#fafafa}
figure.sample .pair{display:flex;gap:4px}figure.sample img{max-width:100%;height:auto;display:block;image-rendering:auto}
figure.sample .pair img{width:50%}figcaption{font-size:12px;word-break:break-all;margin-top:4px}
.note{color:#a05000}.fail td{font-size:12px}.msg{white-space:pre-wrap;word-break:break-word;max-width:620px}
table.heatmap td.cell{min-width:56px}table.heatmap td.diag{outline:2px solid #222;outline-offset:-2px}
#worst-images img,#ood-images img{max-width:128px;height:auto;display:block}h3{font-size:15px;margin:18px 0 6px}
svg text{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;font-size:12px;fill:#222}
"""


def _summary_section(run, stats, failures, card, problems):
    counts = dict(run.counts)
    # A run that died before summary.json (written last) still gets counts from what it wrote.
    if counts["segmented"] is None:
        counts["segmented"] = stats.images
    if counts["failed"] is None:
        counts["failed"] = failures.total
    if counts["read"] is None:
        counts["read"] = counts["segmented"] + counts["failed"]
    start, end = _parse_time(run.start_time), _parse_time(run.end_time)
    duration = (end - start).total_seconds() if start and end else None
    throughput = counts["segmented"] / duration if duration and duration > 0 else None
    cards = [
        ("read", _format_count(counts["read"]), "inputs read"),
        ("segmented", _format_count(counts["segmented"]), "images segmented"),
        ("failed", _format_count(counts["failed"]), "inputs failed"),
        ("duration", _format_duration(duration), "duration"),
        ("throughput", "–" if throughput is None else f"{throughput:.2f}/s", "images per second"),
    ]
    if stats.confidence_images:
        cards.append(("confidence", f"{stats.confidence_total / stats.confidence_images:.3f}",
                      "mean pixel confidence"))
    parts = ['<section id="summary"><h2>Run</h2>']
    parts.extend(f'<div class="warn">{_e(problem)}</div>' for problem in problems)
    parts.append('<div class="cards">')
    parts.extend(f'<div class="card" data-field="{name}"><div class="v">{_e(value)}</div>'
                 f'<div class="l">{_e(label)}</div></div>' for name, value, label in cards)
    parts.append("</div>")
    parts.append(f'<p class="sub">Started {_e(run.start_time or "–")} · ended {_e(run.end_time or "–")}</p>')
    parts.append(_model_table(run.model, card))
    parts.append("</section>")
    return "".join(parts)


def _model_table(model, card):
    name, version = model.get("name") or card.get("name"), model.get("version") or card.get("version")
    if not (name or card):
        return "<p>No model was recorded for this run.</p>"
    rows = [("Model", name or "–"), ("Version", version or "–")]
    architecture = card.get("architecture") if isinstance(card.get("architecture"), dict) else {}
    if architecture:
        rows.append(("Architecture", " / ".join(str(architecture[key]) for key in ("variant", "encoder")
                                                if key in architecture)))
    trained_on = card.get("trained_on") if isinstance(card.get("trained_on"), dict) else {}
    if trained_on.get("dataset"):
        rows.append(("Trained on", trained_on["dataset"]))
    test = _card_test_metrics(card)
    for key, label in (("pixel_accuracy", "Test pixel accuracy"), ("mean_accuracy", "Test mean accuracy"),
                       ("mean_iou", "Test mean IoU"), ("fw_iou", "Test frequency-weighted IoU")):
        if _number(test.get(key)) is not None:
            rows.append((label, f"{float(test[key]):.3f}"))
    if test.get("images"):
        rows.append(("Test images", test["images"]))
    if model.get("path"):
        rows.append(("Path", model["path"]))
    body = "".join(f'<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>' for label, value in rows)
    return f'<table id="model">{body}</table>'


def _pixels(totals, name):
    total = totals.get(name)
    return total.pixels if total else 0.0


def _bar_chart(classes, totals):
    """Horizontal bars of total pixels per class; data-value carries the exact total for checking."""
    width, label_width, value_width, row = 900, 150, 190, 30
    plot_width = width - label_width - value_width
    height = row * len(classes) + 10
    largest = max([_pixels(totals, info.name) for info in classes] + [0.0])
    all_pixels = sum(_pixels(totals, info.name) for info in classes)
    parts = [f'<svg id="class-bars" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="total pixels per class">']
    for index, info in enumerate(classes):
        pixels = _pixels(totals, info.name)
        bar = plot_width * pixels / largest if largest else 0.0
        y = 5 + index * row
        share = pixels / all_pixels if all_pixels else 0.0
        parts.append(
            f'<text x="{label_width - 8}" y="{y + row / 2 + 4:.1f}" text-anchor="end">{_e(info.name)}</text>'
            f'<rect class="bar" data-class="{_e(info.name)}" data-value="{pixels:.0f}" x="{label_width}" '
            f'y="{y + 4}" width="{bar:.2f}" height="{row - 8}" fill="{_rgb(info.color)}" stroke="#333" '
            f'stroke-width="0.5"><title>{_e(info.name)}: {_format_count(pixels)} px</title></rect>'
            f'<text x="{label_width + bar + 6:.2f}" y="{y + row / 2 + 4:.1f}">{_format_count(pixels)} px '
            f'({_format_percent(share)})</text>')
    parts.append("</svg>")
    return "".join(parts)


def _legend(classes):
    return "".join(f'<span class="legend-item"><span class="swatch" style="background:{_rgb(info.color)}">'
                   f'</span>{_e(info.name)}</span>' for info in classes)


def _classes_section(classes, totals, area_unit, card):
    iou = _card_test_metrics(card).get("per_class_iou")
    iou = iou if isinstance(iou, dict) else {}
    has_area = any(totals.get(info.name) and totals[info.name].area is not None for info in classes)
    has_confidence = any(totals.get(info.name) and totals[info.name].mean_confidence is not None
                         for info in classes)
    all_pixels = sum(_pixels(totals, info.name) for info in classes)
    header = ('<tr><th class="num">id</th><th>class</th><th class="num">pixels</th><th class="num">share</th>'
              + (f'<th class="num">area ({_e(area_unit or "units")})</th>' if has_area else "")
              + ('<th class="num">mean confidence</th>' if has_confidence else "")
              + ('<th class="num">test IoU</th>' if iou else "") + "</tr>")
    rows = []
    for info in classes:
        total = totals.get(info.name) or ClassTotal(0.0)
        rows.append(
            f'<tr data-class="{_e(info.name)}"><td class="num">{info.id}</td><td><span class="swatch" '
            f'style="background:{_rgb(info.color)}"></span>{_e(info.name)}</td>'
            f'<td class="num">{_format_count(total.pixels)}</td>'
            f'<td class="num">{_format_percent(total.pixels / all_pixels if all_pixels else None)}</td>'
            + (f'<td class="num">{_format_number(total.area)}</td>' if has_area else "")
            + (f'<td class="num">{_format_fixed(total.mean_confidence)}</td>' if has_confidence else "")
            + (f'<td class="num">{_format_fixed(_number(iou.get(info.name)))}</td>' if iou else "")
            + "</tr>")
    return ('<section id="classes"><h2>Class areas</h2>'
            f'<div class="legend" id="legend">{_legend(classes)}</div>'
            + (_bar_chart(classes, totals) if all_pixels else "<p>No pixels were segmented.</p>")
            + f'<table id="class-table">{header}{"".join(rows)}</table></section>')


def _distribution_chart(classes, distributions):
    """Per class: histogram of per-image fractions as a density strip, with a box plot on top."""
    width, label_width, right, row = 900, 150, 150, 44
    plot_width = width - label_width - right
    top = 24
    height = top + row * len(classes) + 24

    def x_of(value):
        return label_width + plot_width * value

    parts = [f'<svg id="fraction-distribution" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="distribution of per-image class fractions">']
    for tick in range(0, 101, 10):
        x = x_of(tick / 100)
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 20}" stroke="#e4e4e4"/>'
                     f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle">{tick}%</text>')
    parts.append(f'<text x="{width - right + 10}" y="{top - 8}">mean · present in</text>')
    bin_width = plot_width / FRACTION_BINS
    for index, info in enumerate(classes):
        distribution = distributions.get(info.name)
        y = top + index * row
        middle = y + row / 2
        parts.append(f'<text x="{label_width - 8}" y="{middle + 4:.1f}" text-anchor="end">{_e(info.name)}</text>')
        if distribution is None or not distribution.n:
            continue
        peak = max(distribution.counts)
        for bin_index, count in enumerate(distribution.counts):
            if count:
                bar = (row - 8) * count / peak
                parts.append(f'<rect class="hist" x="{label_width + bin_index * bin_width:.2f}" '
                             f'y="{y + row - 4 - bar:.2f}" width="{bin_width:.2f}" height="{bar:.2f}" '
                             f'fill="{_rgb(info.color)}" fill-opacity="0.55"/>')
        q1, median, q3 = (distribution.quantile(q) for q in (0.25, 0.5, 0.75))
        parts.append(
            f'<g class="box" data-class="{_e(info.name)}" data-median="{median:.4f}" '
            f'data-mean="{distribution.mean:.4f}">'
            f'<line x1="{x_of(distribution.low):.2f}" y1="{middle}" x2="{x_of(distribution.high):.2f}" '
            f'y2="{middle}" stroke="#222"/>'
            f'<rect x="{x_of(q1):.2f}" y="{middle - 7}" width="{max(x_of(q3) - x_of(q1), 1):.2f}" height="14" '
            f'fill="white" fill-opacity="0.6" stroke="#222"/>'
            f'<line x1="{x_of(median):.2f}" y1="{middle - 7}" x2="{x_of(median):.2f}" y2="{middle + 7}" '
            f'stroke="#222" stroke-width="2"/>'
            f'<circle cx="{x_of(distribution.mean):.2f}" cy="{middle}" r="3" fill="#222"/>'
            f'<title>{_e(info.name)}: median {_format_percent(median)}, mean {_format_percent(distribution.mean)}, '
            f'min {_format_percent(distribution.low)}, max {_format_percent(distribution.high)}</title></g>'
            f'<text x="{width - right + 10}" y="{middle + 4:.1f}">{_format_percent(distribution.mean)} · '
            f'{distribution.present:,}/{distribution.n:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _fractions_section(classes, stats):
    if not stats.images:
        body = "<p>No per-image statistics: no image was segmented.</p>"
    else:
        body = ('<p class="sub">Each row: histogram of the fraction of each image covered by the class, '
                'box = quartiles, thick line = median, dot = mean, whiskers = min–max.</p>'
                + _distribution_chart(classes, stats.distributions))
    return f'<section id="fractions"><h2>Per-image class fractions ({stats.images:,} images)</h2>{body}</section>'


def _gallery_section(items, classes, stats):
    if not items:
        return '<section id="gallery"><h2>Gallery</h2><p>No segmented images to show.</p></section>'
    figures = []
    for item in items:
        record = item.record
        top = sorted(record.fractions.items(), key=lambda pair: -pair[1])[:3]
        fractions = ", ".join(f"{_e(name)} {_format_percent(value, 0) if value >= 0.005 else '&lt;1%'}"
                              for name, value in top if value > 0)
        images = []
        if item.image_uri:
            images.append(f'<img class="source" alt="image {_e(record.key)}" src="{item.image_uri}">')
        if item.overlay_uri:
            kind = "overlay" if item.image_uri else "mask"
            images.append(f'<img class="{kind}" alt="{kind} {_e(record.key)}" src="{item.overlay_uri}">')
        note = f'<div class="note">{_e(item.note)}</div>' if item.note else ""
        figures.append(
            f'<figure class="sample" data-key="{_e(record.key)}"><div class="pair">{"".join(images)}</div>'
            f'<figcaption><b>{_e(record.key)}</b> · {record.width}×{record.height}<br>{fractions}{note}'
            f'</figcaption></figure>')
    shown = (f"{len(items)} of {stats.images:,} images, chosen by a hash of their key so re-runs show the "
             "same ones; left: the image, right: its mask blended over it.")
    return (f'<section id="gallery"><h2>Gallery</h2><p class="sub">{_e(shown)}</p>'
            f'<div class="legend">{_legend(classes)}</div><div class="gallery">{"".join(figures)}</div></section>')


def _confusion_heatmap(confusion, classes):
    """Rows = truth, columns = predicted; shaded by the row's share, counts shown."""
    names = [info.name for info in classes]
    header = ('<tr><th class="corner">truth ↓ / predicted →</th>'
              + "".join(f'<th scope="col">{_e(name)}</th>' for name in names) + '<th class="num">pixels</th></tr>')
    rows = []
    for index, counts in enumerate(confusion):
        total = sum(counts)
        cells = []
        for column, count in enumerate(counts):
            share = count / total if total else 0.0
            colour = "#fff" if share > 0.55 else "#222"
            cells.append(f'<td class="num cell{" diag" if column == index else ""}" data-count="{count}" '
                         f'data-share="{share:.4f}" style="background:rgba(40,90,200,{share:.3f});color:{colour}">'
                         f'{_format_count(count)}<br><small>{_format_percent(share if total else None)}</small></td>')
        name = names[index] if index < len(names) else str(index)
        rows.append(f'<tr><th scope="row">{_e(name)}</th>{"".join(cells)}'
                    f'<td class="num">{_format_count(total)}</td></tr>')
    return f'<table id="confusion-matrix" class="heatmap">{header}{"".join(rows)}</table>'


def _worst_link(output_dir, record):
    """A link to the mask relative to the report (which sits in OUT), else its full path."""
    path = record.mask_path
    prefix = output_dir.rstrip("/") + "/"
    href = path[len(prefix):] if path.startswith(prefix) else path
    return f'<a href="{_e(href)}">{_e(href)}</a>'


def _truth_section(truth, source, items, classes, output_dir):
    cards = [("pixel_accuracy", "pixel accuracy"), ("mean_accuracy", "mean accuracy"), ("mean_iou", "mean IoU"),
             ("fw_iou", "frequency-weighted IoU")]
    counts = [("images_with_truth", "images with truth"), ("images_without_truth", "images without truth"),
              ("truth_files_unmatched", "truth files matching no image"), ("images_failed", "truth failures")]
    parts = [f'<section id="truth"><h2>Agreement with ground truth</h2><p class="sub">{_e(source)}</p>'
             '<div class="cards">']
    parts.extend(f'<div class="card" data-field="{name}"><div class="v">{_format_fixed(_number(truth.get(name)))}'
                 f'</div><div class="l">{_e(label)}</div></div>' for name, label in cards)
    parts.extend(f'<div class="card" data-field="{name}"><div class="v">{_format_count(_number(truth.get(name)))}'
                 f'</div><div class="l">{_e(label)}</div></div>' for name, label in counts)
    parts.append("</div>")
    per_class = truth.get("per_class_iou") if isinstance(truth.get("per_class_iou"), dict) else {}
    confusion = truth.get("confusion")
    if isinstance(confusion, list) and confusion:
        parts.append('<h3>Confusion matrix</h3><p class="sub">Pixels by true class (rows) and predicted class '
                     '(columns), ignore pixels excluded; shade = share of the row.</p>'
                     + _confusion_heatmap(confusion, classes))
    if per_class:
        parts.append('<table id="truth-iou"><tr><th>class</th><th class="num">IoU</th></tr>'
                     + "".join(f'<tr data-class="{_e(name)}"><td>{_e(name)}</td>'
                               f'<td class="num">{_format_fixed(_number(value))}</td></tr>'
                               for name, value in per_class.items()) + "</table>")
    if items:
        rows = []
        for item in items:
            record, scores = item.record, item.record.truth
            thumbnail = (f'<img alt="overlay {_e(record.key)}" src="{item.overlay_uri}">' if item.overlay_uri
                         else f'<span class="note">{_e(item.note)}</span>')
            rows.append(f'<tr data-key="{_e(record.key)}"><td>{thumbnail}</td><td class="msg">{_e(record.key)}<br>'
                        f'{_worst_link(output_dir, record)}</td>'
                        f'<td class="num">{_format_fixed(_number(scores.get("mean_iou")))}</td>'
                        f'<td class="num">{_format_fixed(_number(scores.get("pixel_accuracy")))}</td></tr>')
        parts.append(f'<h3>Worst images</h3><p class="sub">The {len(items)} images with the lowest mean IoU '
                     '(then pixel accuracy), worst first; the mask is blended over the image.</p>'
                     '<table id="worst-images"><tr><th>mask over image</th><th>key · mask</th>'
                     f'<th class="num">mean IoU</th><th class="num">pixel accuracy</th></tr>{"".join(rows)}</table>')
    parts.append("</section>")
    return "".join(parts)


def _drift_section(drift, classes):
    """Per class the previous and current pixel share, the change and PSI/KS (``--compare_to``); flagged rows red."""
    colours = {info.name: info.color for info in classes}
    images = drift.get("images") if isinstance(drift.get("images"), dict) else {}
    flagged = set(drift.get("flagged") or [])
    rows = []
    for entry in drift.get("classes") or []:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("name"))
        change = _number(entry.get("change_pp"))
        change = "–" if change is None else f"{change:+.2f} pp"
        reasons = ", ".join(map(str, entry.get("flagged_by") or [])) or "–"
        attributes = ' class="flagged"' if name in flagged else ""
        mark = ' style="background:#fbd5d5"' if name in flagged else ""
        swatch = f'<span class="swatch" style="background:{_rgb(colours[name])}"></span>' if name in colours else ""
        cells = [_format_percent(_number(entry.get("previous_share")), 2),
                 _format_percent(_number(entry.get("current_share")), 2), change,
                 _format_fixed(_number(entry.get("psi"))), _format_fixed(_number(entry.get("ks")))]
        rows.append(f'<tr data-class="{_e(name)}"{attributes}><td{mark}>{swatch}{_e(name)}</td>'
                    + "".join(f'<td class="num"{mark}>{_e(cell)}</td>' for cell in cells)
                    + f'<td{mark}>{_e(reasons)}</td></tr>')
    rule = (f"A class is flagged when its share of all pixels moved by more than "
            f"{100 * (_number(drift.get('threshold')) or 0.0):g} percentage points, or when the PSI of its per-image "
            f"fractions ({drift.get('psi_bins')} bins) is above {drift.get('psi_threshold')} and above sampling "
            f"noise ({_format_fixed(_number(drift.get('psi_noise_level')))} for these image counts).")
    verdict = (f'<div class="warn" id="drift-flagged">Flagged: {_e(", ".join(sorted(flagged)))}</div>' if flagged
               else '<p id="drift-flagged">No class flagged.</p>')
    return (f'<section id="drift"><h2>Drift from the previous run</h2><p class="sub">Compared with '
            f'{_e(drift.get("compare_to"))} (ended {_e(drift.get("previous_end_time") or "–")}): '
            f'{_format_count(_number(images.get("previous")))} images then, '
            f'{_format_count(_number(images.get("current")))} now. {_e(rule)}</p>{verdict}'
            '<table id="drift-table"><tr><th>class</th><th class="num">previous share</th>'
            '<th class="num">current share</th><th class="num">change</th><th class="num">PSI</th>'
            f'<th class="num">KS</th><th>flagged by</th></tr>{"".join(rows)}</table></section>')


def _ood_section(rule, flagged, items):
    """Flagged images, with why and a thumbnail; the rule and any check the card could not support."""
    rule = rule if isinstance(rule, dict) else {}
    parts = ['<section id="ood"><h2>Inputs unlike the training data</h2>'
             '<p class="sub">Images the out-of-distribution check flagged: the model was not trained or tested on '
             'anything like them, so their masks may be confidently wrong.</p><div class="cards">'
             f'<div class="card" data-field="ood_flagged"><div class="v">{_format_count(flagged.flagged)}</div>'
             '<div class="l">images flagged</div></div>'
             f'<div class="card" data-field="ood_checked"><div class="v">{_format_count(flagged.checked)}</div>'
             '<div class="l">images checked</div></div></div>']
    if rule.get("rule"):
        thresholds = "; ".join(f"{name} {rule[name]}" for name in ("min_confidence", "outside_limit")
                               if rule.get(name) is not None)
        parts.append(f'<p class="sub">{_e(rule["rule"])}{"; " if thresholds else ""}{_e(thresholds)}.</p>')
    parts.extend(f'<div class="warn">Check not made: {_e(line)}</div>' for line in rule.get("unavailable") or [])
    if items:
        rows = []
        for item in items:
            record = item.record
            thumbnail = (f'<img alt="overlay {_e(record.key)}" src="{item.overlay_uri}">' if item.overlay_uri
                         else f'<span class="note">{_e(item.note)}</span>')
            reasons = "<br>".join(_e(reason) for reason in record.ood.get("reasons") or [])
            rows.append(f'<tr data-key="{_e(record.key)}"><td>{thumbnail}</td><td class="msg">{_e(record.key)}</td>'
                        f'<td class="num">{_format_fixed(record.mean_confidence)}</td><td class="msg">{reasons}</td></tr>')
        more = f" (the first {len(items)} by key)" if flagged.flagged > len(items) else ""
        parts.append(f'<h3>Flagged images{_e(more)}</h3><table id="ood-images"><tr><th>mask over image</th>'
                     f'<th>key</th><th class="num">mean confidence</th><th>reasons</th></tr>{"".join(rows)}</table>')
    parts.append("</section>")
    return "".join(parts)


def _failures_section(failures):
    if not failures.total:
        return '<section id="failures"><h2>Failures</h2><p>No input failed.</p></section>'
    kinds = "".join(f'<tr><td>{_e(stage)}</td><td>{_e(error_type)}</td><td class="num">{count:,}</td></tr>'
                    for (stage, error_type), count in sorted(failures.by_kind.items(), key=lambda kv: -kv[1]))
    rows = []
    for failure in failures.rows:
        message = failure.message
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + " …"
        rows.append(f'<tr><td class="msg">{_e(failure.uri)}</td><td>{_e(failure.stage)}</td>'
                    f'<td>{_e(failure.error_type)}</td><td class="msg">{_e(message)}</td></tr>')
    shown = (f"showing the first {len(failures.rows):,} of {failures.total:,}"
             if failures.total > len(failures.rows) else f"{failures.total:,}")
    return ('<section id="failures"><h2>Failures</h2>'
            '<table id="failure-kinds"><tr><th>stage</th><th>error type</th><th class="num">inputs</th></tr>'
            f'{kinds}</table><p class="sub">Failed inputs ({_e(shown)}):</p>'
            '<table id="failure-table" class="fail"><tr><th>uri</th><th>stage</th><th>error type</th>'
            f'<th>message</th></tr>{"".join(rows)}</table></section>')


def _format_bytes(value):
    value = _number(value)
    if value is None:
        return "–"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:,.2f} {unit}"
    return f"{int(value):,} B"


def _io_section(io):
    """Shuffle, read and written bytes (summary.json ``io``, from the run's Beam metrics): one small table."""
    if not isinstance(io, dict):
        return ""
    shuffle = io.get("shuffle") if isinstance(io.get("shuffle"), dict) else {}
    written = io.get("written_bytes") if isinstance(io.get("written_bytes"), dict) else {}
    labels = (("refs", "de-duplicating GroupByKey: image refs (incl. TFRecord image bytes)"),
              ("tfrecord_payloads", "… of which TFRecord image bytes"),
              ("stitch_masks", "stitch GroupByKey: tile class-id crops"),
              ("stitch_overlays", "stitch GroupByKey: tile overlay crops"))
    rows = []
    for key, label in labels:
        entry = shuffle.get(key) if isinstance(shuffle.get(key), dict) else {}
        rows.append(f'<tr><td>{_e(label)}</td><td class="num">{_e(_format_bytes(entry.get("bytes")))}</td>'
                    f'<td class="num">{_e(_format_count(_number(entry.get("elements"))))}</td></tr>')
    rows.append(f'<tr><td>shuffle total</td><td class="num">{_e(_format_bytes(shuffle.get("total_bytes")))}</td>'
                '<td></td></tr>')
    rows.append(f'<tr><td>read (encoded images)</td><td class="num">{_e(_format_bytes(io.get("read_bytes")))}</td>'
                f'<td class="num">{_e(_format_count(_number(io.get("images_read"))))}</td></tr>')
    parts = ", ".join(f"{name} {_format_bytes(written.get(name))}" for name in ("masks", "overlays", "stats", "failures")
                      if _number(written.get(name)))
    rows.append(f'<tr><td>written{(" (" + _e(parts) + ")") if parts else ""}</td>'
                f'<td class="num">{_e(_format_bytes(written.get("total")))}</td><td></td></tr>')
    return ('<section id="io"><h2>Data moved</h2><p class="sub">Bytes entering each shuffle, read and written '
            f'({_e(io.get("source") or "Beam metrics")}).</p>'
            '<table id="io-table"><tr><th>what</th><th class="num">bytes</th><th class="num">elements</th></tr>'
            f'{"".join(rows)}</table></section>')


def _mask_palette(path):
    """Class colours from a mask's PNG palette: the sinks write the card's colours into every mask."""
    try:
        with Image.open(io.BytesIO(_read_bytes(path, "uncompressed"))) as mask:
            palette = mask.getpalette() if mask.mode == "P" else None
    except Exception:  # pylint: disable=broad-except
        return None
    return [tuple(palette[i:i + 3]) for i in range(0, len(palette), 3)] if palette else None


def _report_classes(card, run, stats):
    """Classes in id order with colours: the card's, else the masks' palette, else a fixed palette."""
    classes = _card_classes(card)
    if not classes:
        palette = _mask_palette(stats.first_mask) if stats.first_mask else None
        for index, name in enumerate(run.totals or stats.pixels):
            class_id = run.class_ids.get(name, index)
            color = (palette[class_id] if palette and class_id < len(palette)
                     else FALLBACK_PALETTE[class_id % len(FALLBACK_PALETTE)])
            classes.append(ClassInfo(class_id, name, color))
    known = {info.name for info in classes}
    for name in list(stats.pixels) + list(stats.distributions):
        if name not in known:
            index = len(classes)
            classes.append(ClassInfo(index, name, FALLBACK_PALETTE[index % len(FALLBACK_PALETTE)]))
            known.add(name)
    return classes


def build_report(output_dir, max_gallery=DEFAULT_MAX_GALLERY, thumbnail_size=DEFAULT_THUMBNAIL_SIZE):
    """Read a run's output directory and return the report as an HTML string."""
    output_dir = output_dir.rstrip("/") or output_dir
    problems = []
    summary = _read_summary(output_dir, problems)
    run = _run_summary(summary)
    stats_files, failure_files = _stats_files(output_dir, run), _failure_files(output_dir, run)
    if not (run.counts["read"] is not None or stats_files or failure_files):
        raise FileNotFoundError(f"{output_dir} has no {SUMMARY_FILE}, stats or failures files: "
                                "it is not the --output of a deconvseg run")
    card = _read_card(run, problems)

    evaluation = _read_evaluation(output_dir, summary, problems)
    stats = _RunStatistics(max_gallery)
    worst = _WorstImages(MAX_WORST_IMAGES)
    flagged = _FlaggedImages(MAX_FLAGGED_IMAGES)
    for row in _iter_rows(stats_files, problems):
        record = _image_record(row, output_dir)
        stats.add(record)
        flagged.add(record)
        if evaluation is None:
            worst.add(record)
    stats.finish_distributions()
    if evaluation is not None:
        truth, source = evaluation["truth"], f"Scored after the run by python -m pipeline.evaluate ({EVALUATION_FILE})."
        for entry in evaluation.get("images") or []:
            if isinstance(entry, dict):
                worst.add(_image_record(entry, output_dir))
    else:
        truth, source = summary.get("truth"), "Scored during the run (--truth)."

    failures = _FailureSummary(MAX_FAILURE_ROWS)
    for row in _iter_rows(failure_files, problems):
        failures.add(_failure_record(row))

    totals = run.totals or {name: ClassTotal(pixels, stats.areas.get(name)) for name, pixels in stats.pixels.items()}
    classes = _report_classes(card, run, stats)
    palette = _palette(classes)
    spec = _input_spec(run, card)
    items = [_gallery_item(record, palette, thumbnail_size, run.tfrecord_image_feature, spec)
             for record in stats.gallery()]
    truth_html = ""
    if isinstance(truth, dict):
        worst_items = [_gallery_item(record, palette, thumbnail_size // 2, run.tfrecord_image_feature, spec)
                       for record in worst.worst_first()]
        truth_html = _truth_section(truth, source, worst_items, classes, output_dir)
    ood_html = ""
    if flagged.checked or isinstance(summary.get("ood"), dict):
        ood_items = [_gallery_item(record, palette, thumbnail_size // 2, run.tfrecord_image_feature, spec)
                     for record in flagged.first()]
        ood_html = _ood_section(summary.get("ood"), flagged, ood_items)

    title = f"deconvseg run report: {output_dir}"
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_e(title)}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>Segmentation run report</h1><p class=\"sub\">{_e(output_dir)} · generated {_e(generated)}</p>"
        + _summary_section(run, stats, failures, card, problems)
        + _classes_section(classes, totals, run.area_unit, card)
        + (_drift_section(summary["drift"], classes) if isinstance(summary.get("drift"), dict) else "")
        + truth_html
        + ood_html
        + _fractions_section(classes, stats)
        + _gallery_section(items, classes, stats)
        + _failures_section(failures)
        + _io_section(summary.get("io"))
        + "</body></html>\n")


def write_report(output_dir, report_path=None, max_gallery=DEFAULT_MAX_GALLERY,
                 thumbnail_size=DEFAULT_THUMBNAIL_SIZE):
    """Write ``report.html`` for a finished run (default ``OUT/report.html``) and return its path."""
    report_path = report_path or _join(output_dir, REPORT_NAME)
    document = build_report(output_dir, max_gallery=max_gallery, thumbnail_size=thumbnail_size)
    with FileSystems.create(report_path, mime_type="text/html", compression_type="uncompressed") as handle:
        handle.write(document.encode("utf-8"))
    LOGGER.info("Wrote run report %s (%d bytes)", report_path, len(document))
    return report_path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="the run's --output directory (local path or gs://...)")
    parser.add_argument("--out", help="where to write the report (default: OUTPUT/report.html)")
    parser.add_argument("--max_gallery", type=int, default=DEFAULT_MAX_GALLERY,
                        help="number of sample images in the gallery (default %(default)s)")
    parser.add_argument("--thumbnail_size", type=int, default=DEFAULT_THUMBNAIL_SIZE,
                        help="longest edge of gallery thumbnails in pixels (default %(default)s)")
    args = parser.parse_args(argv)
    if args.max_gallery < 0 or args.thumbnail_size < 16:
        parser.error("--max_gallery must be >= 0 and --thumbnail_size >= 16")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = write_report(args.output, args.out, args.max_gallery, args.thumbnail_size)
    except FileNotFoundError as error:
        print(f"deconvseg report: error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
