"""The per-image sinks: each ``ImageMask``'s files under OUT and its statistics record, and ``--skip_existing``.

* ``OUT/masks/<key>.png`` or ``.tif`` (``transforms.imaging.mask_files``): class id
  per pixel, a palette PNG or, for georeferenced inputs, a Cloud-Optimized
  GeoTIFF. Written with ``transforms.out_files.atomic_write``, so a mask
  either exists complete or not at all; the image's statistics record rides
  inside the mask so ``--skip_existing`` can re-emit it without recomputing.
* ``OUT/overlays/<key>.png`` (``--overlays``): image and class colours mixed.
* ``OUT/polygons/<key>.geojson`` or ``.parquet`` (``--polygons``, ``transforms.imaging.polygons``).

Overlays and polygons are encoded in memory and written with ``atomic_write``
too, so no file under OUT is ever half-written.

The records go on to ``transforms.record_files`` (stats, failures, summary).
"""

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from PIL import Image

from transforms import accounting
from transforms.imaging import progress
from transforms.imaging.mask_files import (
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
from transforms.imaging.ood import OodRule
from transforms.imaging.polygons import MIME_TYPES, PolygonSettings, encode_image_polygons, polygons_relpath
from transforms.imaging.records import (
  DONE,
  FAILED,
  OVERLAYS_DIR,
  STAGE_TRUTH,
  STAGE_WRITE,
  Failure,
  ImageMask,
  failure_from_exception,
)
from transforms.lookahead import LookaheadDoFn
from transforms.out_files import OutputError, atomic_write, is_resource_error, join
from transforms.statistics import image_record
from transforms.truth import TruthError, evaluate_mask, stem

# Overlays are photographic previews: fastest level.
OVERLAY_COMPRESS_LEVEL = 1


def overlay_path(output: str, key: str) -> str:
  return join(output, OVERLAYS_DIR, f"{key}.png")


def truth_outcome(
  mask_uri: str, key: str, truth_uri: str | None, class_ids: Any, names: Sequence[str]
) -> tuple[dict[str, Any] | None, Failure | None]:
  """(truth block, None) or (None, Failure at stage ``truth``); (None, None) when the image has no truth."""
  if truth_uri is None:
    return None, None
  try:
    return evaluate_mask(truth_uri, class_ids, names), None
  except TruthError as exc:
    return None, failure_from_exception(mask_uri, key, STAGE_TRUTH, exc, str(exc))
  except Exception as exc:  # unreadable file, storage errors
    return None, failure_from_exception(
      mask_uri, key, STAGE_TRUTH, exc, f"cannot read the truth mask {truth_uri}: {exc}"
    )


NO_POLYGONS = PolygonSettings()


@dataclass(frozen=True)
class SinkSettings:
  """What the per-image sinks (``WriteMasksFn``, ``SkipExistingFn``) take from the run.

  ``model`` is the model's name, version (and path); ``pixel_size`` and
  ``pixel_unit`` are --pixel_size and --pixel_unit (areas), ``compress_level``
  the masks' zlib level, ``overlays`` whether overlays are written (the
  handler blends them; ``SkipExistingFn`` checks they exist), ``truth``
  whether --truth is given, ``ood_rule`` the card's out-of-distribution
  check. ``write_ahead`` masks (at most ``write_ahead_pixels`` pixels) are
  encoded and written behind the bundle thread; 0 writes inline.
  """

  output: str
  classes: Sequence[dict[str, Any]] = field(hash=False)
  model: dict[str, Any] = field(hash=False)
  pixel_size: float | None = None
  pixel_unit: str = "m"
  compress_level: int = DEFAULT_MASK_COMPRESS_LEVEL
  mask_format: str = "png"
  polygons: PolygonSettings = NO_POLYGONS
  overlays: bool = False
  truth: bool = False
  ood_rule: OodRule | None = None
  write_ahead: int = 0
  write_ahead_pixels: int | None = None

  @property
  def class_names(self) -> list[str]:
    return [entry["name"] for entry in self.classes]


class WriteOutcome(NamedTuple):
  """One mask through the sink: its stats record and pixels, or the failure; the bytes written for it."""

  record: dict[str, Any] | None = None
  pixels: int = 0
  failure: Failure | None = None
  mask_bytes: int | None = None
  overlay_bytes: int | None = None


class WriteMasksFn(LookaheadDoFn):
  """ImageMask -> mask (and overlay) files, then its statistics record.

  With ``write_ahead`` > 0, encoding and writing run on a background thread
  (``transforms.lookahead``) up to that many masks behind, fewer for large
  masks (``write_ahead_pixels``): on the in-process runner this stage shares
  the model's thread, so PNG compression would otherwise stall inference.
  Each mask still yields exactly one record or one failure, in input order,
  and every file is still written with the temp-and-rename of ``atomic_write``.
  A write that fails for lack of space, quota or permission stops the run
  (``OutputError``) instead of failing one image.

  With ``truth`` (``--truth``), ``process`` takes the {stem: truth URI} side
  input: the mask is compared with its truth mask here, while it is in hand,
  before anything is written, so an image whose truth mask does not fit it
  fails at stage ``truth`` and leaves no mask; its record gains ``truth``
  (``null`` for an image without a truth mask).
  """

  def __init__(self, settings: SinkSettings):
    super().__init__(settings.write_ahead, settings.write_ahead_pixels, "deconvseg-write")
    self._settings = settings
    self._classes = list(settings.classes)
    self._class_names = settings.class_names
    self._segmented = Metrics.counter(accounting.NAMESPACE, "masks_written")
    self._pixels = Metrics.counter(accounting.NAMESPACE, "pixels_segmented")
    self._mask_bytes = accounting.distribution(accounting.WRITTEN_MASKS)
    self._overlay_bytes = accounting.distribution(accounting.WRITTEN_OVERLAYS)

  def setup(self) -> None:
    self._palette = palette_bytes(self._classes)
    self._stopped: OutputError | None = None
    super().setup()

  # The {stem: truth URI} side input comes before Beam's window and timestamp parameters.
  def process(  # type: ignore[override]
    self,
    mask: Any,
    truth_index: dict[str, str] | None = None,
    window: Any = beam.DoFn.WindowParam,
    timestamp: Any = beam.DoFn.TimestampParam,
  ) -> Iterator[Any]:
    truth_uri = truth_index.get(stem(mask.key)) if truth_index else None
    yield from super().process((mask, truth_uri), window, timestamp)

  def _pixels_of(self, item: tuple[ImageMask, str | None]) -> int:
    return item[0].width * item[0].height

  def _work(self, item: tuple[ImageMask, str | None]) -> WriteOutcome:
    """One mask's stats record and the bytes written, or its failure; runs on the write-behind thread.

    Raises only the
    ``OutputError`` of a resource error (disk full, quota, permissions, I/O),
    which stops the run: failing image after image would hide it, and end
    in an exit status 0 with every image failed.
    """
    mask, truth_uri = item
    if self._stopped is not None:  # an earlier write hit a resource error: write nothing more
      raise self._stopped
    fmt = mask_format_for(self._settings.mask_format, mask.georef)
    truth, failure = truth_outcome(mask.uri, mask.key, truth_uri, mask.class_ids, self._class_names)
    if failure is not None:
      return WriteOutcome(failure=failure)
    try:
      record, mask_bytes, overlay_bytes = self._write_files(mask, fmt)
    except Exception as exc:  # whatever else stops encoding or writing becomes a failure at stage write
      if isinstance(exc, OutputError) and is_resource_error(exc):  # every later image would fail the same way
        self._stopped = exc
        raise
      message = f"cannot write outputs: {exc}"
      return WriteOutcome(failure=failure_from_exception(mask.uri, mask.key, STAGE_WRITE, exc, message))
    if self._settings.truth:
      record["truth"] = truth
    return WriteOutcome(record, mask.width * mask.height, mask_bytes=mask_bytes, overlay_bytes=overlay_bytes)

  def _write_files(self, mask: ImageMask, fmt: str) -> tuple[dict[str, Any], int, int | None]:
    """Writes the polygons, the overlay, then the mask (the mark of a finished image, --skip_existing: last).

    Returns the stats record (inside the mask too) and the mask's and overlay's bytes.
    """
    settings, output = self._settings, self._settings.output
    mask_path = join(output, mask_relpath(mask.key, fmt))
    record = image_record(
      mask, self._classes, settings.model, mask_path, settings.pixel_size, settings.pixel_unit, settings.ood_rule
    )
    if settings.polygons.enabled:
      self._write_polygons(mask, record)
    overlay_bytes = self._write_overlay(mask)
    if fmt == GEOTIFF:
      data = encode_geotiff(mask.class_ids, mask.georef, self._classes, record, settings.compress_level)
      mime_type = "image/tiff"
    else:
      data = encode_mask(mask.class_ids, self._palette, record, settings.compress_level)
      mime_type = "image/png"
    atomic_write(output, mask_path, data, mime_type)
    return record, len(data), overlay_bytes

  def _write_polygons(self, mask: ImageMask, record: dict[str, Any]) -> None:
    """OUT/polygons/<key>.geojson or .parquet; the record gains ``polygons`` and ``polygon_count``."""
    settings = self._settings
    encoded, count = encode_image_polygons(
      mask.key, mask.class_ids, self._classes, mask.georef, settings.polygons, settings.pixel_size, settings.pixel_unit
    )
    record["polygons"] = join(settings.output, polygons_relpath(mask.key, settings.polygons.format))
    record["polygon_count"] = count
    atomic_write(settings.output, record["polygons"], encoded, MIME_TYPES[settings.polygons.format])

  def _write_overlay(self, mask: ImageMask) -> int | None:
    """OUT/overlays/<key>.png when the mask carries an overlay; its size in bytes, else None."""
    if mask.overlay is None:
      return None
    buffer = io.BytesIO()
    Image.fromarray(mask.overlay).save(buffer, format="PNG", compress_level=OVERLAY_COMPRESS_LEVEL)
    output = self._settings.output
    atomic_write(output, overlay_path(output, mask.key), buffer.getvalue(), "image/png")
    return buffer.getbuffer().nbytes

  def _outputs(self, outcome: WriteOutcome) -> Iterator[Any]:
    if outcome.mask_bytes is not None:
      self._mask_bytes.update(outcome.mask_bytes)
    if outcome.overlay_bytes is not None:
      self._overlay_bytes.update(outcome.overlay_bytes)
    if outcome.failure is not None:
      yield beam.pvalue.TaggedOutput(FAILED, outcome.failure)
      return
    self._segmented.inc()
    self._pixels.inc(outcome.pixels)
    progress.WRITTEN.add(1, outcome.pixels)
    yield outcome.record


class SkipExistingFn(beam.DoFn):
  """--skip_existing: an input whose mask is already complete re-emits its record.

  A mask only exists after its atomic rename and carries its own record, so
  finding one means that image finished; any doubt (unreadable PNG, another
  model) means it is processed again. With ``overlays``, an image whose
  overlay is missing (say, the earlier run was made without ``--overlays``)
  is processed again too.

  With ``truth`` (``--truth``), ``process`` takes the {stem: truth URI}
  side input and a reused image gets its ``truth`` from the stored mask's
  pixels, exactly as a new one would; a truth mask that does not fit it is a
  failure at stage ``truth`` (tagged ``FAILED``).
  """

  def __init__(self, settings: SinkSettings):
    self._output = settings.output
    self._model = {"name": settings.model.get("name"), "version": settings.model.get("version")}
    self._overlays = settings.overlays
    self._class_names = settings.class_names if settings.truth else None
    self._mask_format = settings.mask_format
    self._polygons = settings.polygons

  def _companions_missing(self, key: str) -> bool:
    """Whether an output this run asks for besides the mask (overlay, polygons) is missing."""
    if self._overlays and not FileSystems.exists(overlay_path(self._output, key)):
      return True
    polygons = self._polygons
    return polygons.enabled and not FileSystems.exists(join(self._output, polygons_relpath(key, polygons.format)))

  def process(self, ref: Any, truth_index: dict[str, str] | None = None) -> Iterator[Any]:
    record, class_ids = None, None
    try:
      if not self._companions_missing(ref.key):
        for relpath in candidate_relpaths(ref.key, self._mask_format):
          path = join(self._output, relpath)
          if FileSystems.exists(path):
            with FileSystems.open(path, compression_type="uncompressed") as handle:
              class_ids, record = decode_mask(handle.read(), with_pixels=self._class_names is not None)
            break
    except Exception:  # any doubt about the stored mask means the image is processed again
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
