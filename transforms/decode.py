"""The Decode step: reads each ``ImageRef``'s bytes and decodes them on a look-ahead thread.

``DecodeImages`` turns refs into ``DecodedImage``s (pixels as the model's
input spec, and the image's ``ImageHeader``) or ``Failure``s at stage "read"
or "decode"; the decoding itself is ``transforms.imaging.image_decoder``. Bytes come
from the file, from a range of a TFRecord shard (``read_range``), or with the
ref itself.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from PIL import Image

from transforms import accounting
from transforms.geo_windows import WINDOWED_SUFFIXES, open_windowed
from transforms.imaging.bands import DecodeError
from transforms.imaging.display import display_stretch
from transforms.imaging.geo import Georef
from transforms.imaging.image_decoder import check_size, decode_located
from transforms.imaging.input_spec import DEFAULT_SPEC, InputSpec
from transforms.imaging.ood import image_features
from transforms.imaging.records import (
  FAILED,
  STAGE_DECODE,
  STAGE_READ,
  DecodedImage,
  Failure,
  ImageHeader,
  ImageRef,
  failure_from_exception,
)
from transforms.lookahead import LookaheadDoFn
from transforms.staging import open_for_reading

_LOG = logging.getLogger(__name__)


def read_bytes(uri: str) -> bytes:
  with FileSystems.open(uri, compression_type="uncompressed") as handle:
    return handle.read()


def read_range(path: str, offset: int, length: int) -> bytes:
  """``length`` bytes at ``offset`` of a file (a TFRecord record's image, ``ImageRef.offset``).

  On Cloud Storage the reader's buffer is the range itself: Beam's default
  16 MiB read-ahead would download up to 16 MiB for every image.
  """
  handle = open_for_reading(path, length)
  with handle:
    handle.seek(offset)
    data = handle.read(length)
  if len(data) != length:
    raise IOError(f"{path} ends before byte {offset + length}: the shard changed after it was listed")
  return data


def _header(
  ref: ImageRef,
  pixels: Any,  # an array, or a WindowedRaster that samples like one (records.PixelSource)
  pixel_size: tuple[float, float] | None,
  georef: Georef | None,
  settings: "DecodeSettings",
) -> ImageHeader:
  return ImageHeader(
    uri=ref.uri,
    key=ref.key,
    height=pixels.shape[0],
    width=pixels.shape[1],
    pixel_size=pixel_size,
    display=display_stretch(pixels),
    ood=image_features(pixels, *settings.ood_range),
    georef=georef,
  )


class Decoded(NamedTuple):
  """What decoding one ref gives the bundle thread: the image or the failure, and the bytes read for it."""

  image: Optional[DecodedImage]
  failure: Optional[Failure]
  bytes_read: int


def _windowed(ref: ImageRef, settings: "DecodeSettings") -> Optional[Decoded]:
  """The image when the ref is a GeoTIFF file to read by windows, the failure when it is refused, else None
  (read it whole)."""
  if not settings.windowed_bytes or ref.data is not None or ref.offset is not None:
    return None
  if not ref.uri.lower().endswith(WINDOWED_SUFFIXES):
    return None
  try:
    opened = open_windowed(
      ref.uri, settings.spec, partial(check_size, max_pixels=settings.max_image_pixels), settings.windowed_bytes
    )
    if opened is None:
      return None
    pixels, georef = opened
    try:
      header = _header(ref, pixels, georef.pixel_size, georef, settings)
    finally:
      pixels.close()  # on the thread that opened it (GDAL's Python file handles are per thread); tiling reopens
  except DecodeError as exc:
    return Decoded(None, failure_from_exception(ref.uri, ref.key, STAGE_DECODE, exc), 0)
  except Exception as exc:
    _LOG.warning("Unexpected windowed read error for %s: %r", ref.uri, exc)
    return Decoded(None, failure_from_exception(ref.uri, ref.key, STAGE_DECODE, exc, f"cannot read GeoTIFF: {exc}"), 0)
  return Decoded(DecodedImage(header=header, pixels=pixels), None, 0)


def _decode_ref(ref: ImageRef, settings: "DecodeSettings") -> Decoded:
  """The decoded image or the failure of one ref, with the bytes read; never raises (pool thread)."""
  windowed = _windowed(ref, settings)
  if windowed is not None:
    return windowed
  try:
    if ref.data is not None:
      data = ref.data
    elif ref.offset is not None and ref.length is not None:  # a TFRecord record: offset and length together
      data = read_range(ref.path, ref.offset, ref.length)
    else:
      data = read_bytes(ref.uri)
  except Exception as exc:
    return Decoded(None, failure_from_exception(ref.uri, ref.key, STAGE_READ, exc, f"cannot read file: {exc}"), 0)
  size = len(data)
  try:
    pixels, pixel_size, georef = decode_located(data, settings.max_image_pixels, settings.spec)
  except DecodeError as exc:
    return Decoded(None, failure_from_exception(ref.uri, ref.key, STAGE_DECODE, exc), size)
  except MemoryError as exc:
    message = "out of memory while decoding; lower --max_image_pixels"
    return Decoded(None, failure_from_exception(ref.uri, ref.key, STAGE_DECODE, exc, message), size)
  except Exception as exc:
    _LOG.warning("Unexpected decode error for %s: %r", ref.uri, exc)
    message = f"cannot decode image: {exc}"
    return Decoded(None, failure_from_exception(ref.uri, ref.key, STAGE_DECODE, exc, message), size)
  return Decoded(DecodedImage(header=_header(ref, pixels, pixel_size, georef, settings), pixels=pixels), None, size)


@dataclass(frozen=True)
class DecodeSettings:
  """What decoding takes from the run, handed unchanged from ``DecodeImages`` to each ``DecodeImagesFn``.

  ``prefetch`` images (at most ``prefetch_pixels`` decoded pixels) are
  decoded ahead, 0 decodes inline; ``ood_range`` is the training split's
  per-band (p01, p99) for the image's out-of-distribution features
  (``transforms.imaging.ood``), or (None, None). GeoTIFF files whose model input
  would take more than ``windowed_bytes`` are read by windows as they are
  tiled (``transforms.geo_windows``); 0 reads every image whole.
  """

  max_image_pixels: int
  prefetch: int = 0
  prefetch_pixels: Optional[int] = None
  spec: InputSpec = DEFAULT_SPEC
  ood_range: tuple = (None, None)
  windowed_bytes: int = 0


class DecodeImagesFn(LookaheadDoFn):
  """ImageRef -> DecodedImage (as the model's input spec); unreadable or undecodable inputs -> ``failed``.

  Why a thread: on the in-process runner decode, tiling and inference are
  fused into one thread, so without it every PNG decode stalls the model.
  Refs are decoded by one background thread (zlib and Pillow release the GIL)
  up to ``prefetch`` images ahead, and emitted in input order, each with its
  own window: the model works on one batch while the next is being decoded.
  The look-ahead shrinks to one image when images are large
  (``prefetch_pixels`` bounds the decoded pixels held ahead), so memory stays
  bounded. ``prefetch=0`` decodes inline. Metrics are counted on the bundle
  thread (Beam's metric containers are per thread).
  """

  def __init__(self, settings: DecodeSettings):
    super().__init__(settings.prefetch, settings.prefetch_pixels, "deconvseg-decode")
    self._settings = settings
    self._decoded = Metrics.counter(accounting.NAMESPACE, "images_decoded")
    self._pixels = Metrics.counter(accounting.NAMESPACE, "pixels_decoded")
    self._read = accounting.distribution(accounting.READ)

  def setup(self) -> None:
    # decode_image checks the header against --max_image_pixels before any
    # pixel is decoded; Pillow's own guard (warn at N, refuse at 2N) would
    # only add a second, differently worded limit.
    Image.MAX_IMAGE_PIXELS = None
    super().setup()

  def _work(self, ref: ImageRef) -> Decoded:
    return _decode_ref(ref, self._settings)

  def _outputs(self, outcome: Decoded) -> Iterator[Any]:
    if outcome.bytes_read:
      self._read.update(outcome.bytes_read)
    if outcome.failure is not None:
      yield beam.pvalue.TaggedOutput(FAILED, outcome.failure)
      return
    image = outcome.image
    assert image is not None  # a Decoded holds the image or the failure
    height, width = image.pixels.shape[:2]
    self._decoded.inc()
    self._pixels.inc(int(height) * int(width))
    if self._ahead is not None:
      self._ahead.sized(height * width)
    yield image


class DecodeImages(beam.PTransform):
  """Composite: returns (images, failures)."""

  def __init__(self, settings: DecodeSettings):
    super().__init__()
    self._settings = settings

  def expand(self, refs: Any) -> Any:
    decode = DecodeImagesFn(self._settings)
    outputs = refs | "DecodeBytes" >> beam.ParDo(decode).with_outputs(FAILED, main="images")
    return outputs.images, outputs[FAILED]
