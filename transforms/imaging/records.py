"""The pipeline's schema: the elements between steps, their tags, the failure stages, the output layout.

Every other module imports these names rather than spelling the strings.

They are plain ``NamedTuple``s (pickled by Beam's fallback coder) so that the
arrays inside stay numpy ``uint8`` (or the model's ``uint16``) end to end: no
lists, no float maps on the wire. Only the model-facing step ever sees float data.

What is known of an image as a whole (where it came from, its key, size, pixel
size, display stretch, out-of-distribution features, georeference) is one
``ImageHeader``, made at decode. Each element derived from the image (its
tiles, their results, its mask) carries that header, built from the one
before it, rather than copies of its fields; read-only properties (``mask.uri``,
``tile.key``, ``mask.width``...), written once on ``HeaderView``, read through to it.
"""

import re
import time
import uuid
from typing import Any, NamedTuple, Optional, Protocol, Tuple

import numpy as np

from transforms.imaging.geo import Georef
from transforms.imaging.ood import OodFeatures

# Stages named in failure records, in pipeline order.
STAGE_READ = "read"
STAGE_DECODE = "decode"
STAGE_INFERENCE = "inference"
STAGE_WRITE = "write"
# The mask was made but its truth mask (--truth) cannot be compared with it.
STAGE_TRUTH = "truth"

# Tags of multi-output steps: the failure stream, and records of masks a run already has (--skip_existing).
FAILED = "failed"
DONE = "done"

# The output layout under --output (docs/CONTRACTS.md).
MASKS_DIR = "masks"
OVERLAYS_DIR = "overlays"
POLYGONS_DIR = "polygons"
STATS_DIR = "stats"
FAILURES_DIR = "failures"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"


def new_run_id() -> str:
  """A run's id: its UTC start time, then 8 random hex digits, so record files named by it sort by run."""
  return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


class ImageRef(NamedTuple):
  """One input image: where it came from and the key that names its outputs.

  ``data`` holds the encoded bytes when the source already had them in hand
  (a record of a compressed TFRecord shard); for files it is ``None`` and the
  decode step reads the file itself, so that only a path travels through the
  de-duplication shuffle. A record of an uncompressed shard carries where its
  image bytes lie instead (``offset``, ``length`` in the shard named by the URI
  before ``#``), and decode reads just those bytes: the shuffle moves a
  reference, not the image.
  """

  uri: str
  key: str
  data: Optional[bytes] = None
  offset: Optional[int] = None
  length: Optional[int] = None

  @property
  def path(self) -> str:
    """The file to read: the URI, or for a TFRecord record its shard (the URI before ``#index``)."""
    return self.uri.rsplit("#", 1)[0] if self.offset is not None else self.uri


class ImageHeader(NamedTuple):
  """The facts of one image that every element derived from it carries: written once, at decode.

  ``display`` is the image's own stretch for showing it (``transforms.imaging.display``;
  None for uint8), computed once at decode so all its tiles are drawn alike.
  ``ood`` holds the image's ``transforms.imaging.ood.OodFeatures``, computed at decode
  while the pixels are in hand, and carried on to its statistics record.
  """

  uri: str
  key: str
  height: int
  width: int
  pixel_size: Optional[Tuple[float, float]] = None
  display: Optional[np.ndarray] = None
  ood: Optional[OodFeatures] = None
  # the image's georeference when the input carries one, else None
  georef: Optional[Georef] = None


class PixelSource(Protocol):
  """What an image's pixels are read from: a numpy array [H, W, C], or a ``transforms.geo_windows.WindowedRaster``
  that reads the window it is sliced with."""

  @property
  def shape(self) -> Tuple[int, ...]: ...

  @property
  def dtype(self) -> np.dtype: ...

  def __getitem__(self, key: Any) -> np.ndarray: ...


class HeaderView:
  """The header's facts read through on an element that carries one: ``element.uri`` is ``element.header.uri``.

  A mixin of the element types below, each a ``NamedTuple`` of its fields with
  this class beside it; it holds no data of its own (empty ``__slots__``), so
  the elements stay plain tuples that pickle as before.
  """

  __slots__ = ()
  header: ImageHeader

  @property
  def uri(self) -> str:
    return self.header.uri

  @property
  def key(self) -> str:
    return self.header.key

  @property
  def pixel_size(self) -> Optional[Tuple[float, float]]:
    return self.header.pixel_size

  @property
  def display(self) -> Optional[np.ndarray]:
    return self.header.display

  @property
  def ood(self) -> Optional[OodFeatures]:
    return self.header.ood

  @property
  def georef(self) -> Optional[Georef]:
    return self.header.georef


class WholeImageView(HeaderView):
  """``HeaderView`` plus the image's size, for the elements that are the whole image (a tile's size is its own)."""

  __slots__ = ()

  @property
  def height(self) -> int:
    return self.header.height

  @property
  def width(self) -> int:
    return self.header.width


class _DecodedImageFields(NamedTuple):
  header: ImageHeader
  pixels: PixelSource


class DecodedImage(_DecodedImageFields, WholeImageView):
  """An image as the model takes it: [H, W, C] of the card's dtype, orientation applied."""

  __slots__ = ()


class _TileFields(NamedTuple):
  header: ImageHeader
  index: int  # type: ignore[assignment]  # the field shadows tuple.index, which no one calls
  count: int  # type: ignore[assignment]  # the field shadows tuple.count, which no one calls
  top: int
  left: int
  own_top: int
  own_bottom: int
  own_left: int
  own_right: int
  pixels: np.ndarray
  # (error type, message, stage) when the tile's pixels could not be read (a windowed GeoTIFF,
  # ``transforms.geo_windows``): it skips the model and fails its image at that stage.
  error: Optional[Tuple[str, str, str]] = None


class Tile(_TileFields, HeaderView):
  """A window of a decoded image plus where its owned region sits.

  ``pixels`` is a view into the decoded image (no copy until the batch is
  stacked). ``own_*`` are image coordinates of the rectangle this tile
  contributes to the stitched mask (see ``model.tiling``).
  """

  __slots__ = ()


class _TileResultFields(NamedTuple):
  header: ImageHeader
  index: int  # type: ignore[assignment]  # the field shadows tuple.index, which no one calls
  count: int  # type: ignore[assignment]  # the field shadows tuple.count, which no one calls
  own_top: int
  own_left: int
  class_ids: np.ndarray
  class_pixels: np.ndarray
  class_confidence: np.ndarray
  overlay: Optional[np.ndarray] = None
  error: Optional[Tuple[str, str, str]] = None


class TileResult(_TileResultFields, HeaderView):
  """Model output for the owned region of one tile.

  Only the owned crop of the uint8 class map travels on (zlib-packed by
  ``transforms.stitch.pack`` before the shuffle); confidence is reduced on
  the worker to per-class sums so no float map leaves inference.
  ``error`` is set (and the arrays are empty) when this tile could not be
  segmented even on its own, or read: (error type, message, stage).
  """

  __slots__ = ()


class _ImageMaskFields(NamedTuple):
  header: ImageHeader
  class_ids: np.ndarray
  class_pixels: np.ndarray
  class_confidence: np.ndarray
  overlay: Optional[np.ndarray] = None


class ImageMask(_ImageMaskFields, WholeImageView):
  """The full-size segmentation of one image, ready for the sinks."""

  __slots__ = ()


class Failure(NamedTuple):
  """Why one input did not produce a mask; written to ``OUT/failures/``."""

  uri: str
  key: str
  stage: str
  error_type: str
  message: str

  def to_dict(self) -> dict[str, str]:
    """The JSON record, with credentials stripped from the URI and message."""
    record = self._asdict()
    record["uri"] = redact(record["uri"])
    record["message"] = redact(record["message"])
    return record


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_PARAMS = re.compile(
  r"(?i)\b(access_token|token|key|sig|signature|x-goog-signature|x-goog-credential|password|secret)=[^&\s'\"]+"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[a-z0-9._~+/=-]+")


def redact(text: str) -> str:
  """Removes credentials that can ride along in URIs or error texts."""
  text = _USERINFO.sub("***@", text)
  text = _SECRET_PARAMS.sub(lambda m: m.group(1) + "=***", text)
  return _BEARER.sub(lambda m: m.group(1) + " ***", text)


def failure_from_exception(
  uri: str, key: str, stage: str, exc: BaseException | str, message: str | None = None
) -> Failure:
  """Builds a failure record with a one-line, person-readable, credential-free message."""
  text = message or str(exc) or exc.__class__.__name__
  text = redact(" ".join(text.split()))
  if len(text) > 500:
    text = text[:497] + "..."
  return Failure(
    uri=redact(uri),
    key=key,
    stage=stage,
    error_type=exc.__class__.__name__ if isinstance(exc, BaseException) else str(exc),
    message=text,
  )
