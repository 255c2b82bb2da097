"""Decode encoded image bytes into the RGB uint8 array the model takes.

Every Pillow mode the pipeline promises is mapped to RGB uint8 by one
documented rule (see ``to_rgb``); EXIF orientation is applied so masks match
what a viewer shows; animated images use their first frame. The size check
runs on the header before any pixel is decoded, so a decompression bomb (a
tiny file declaring a huge canvas) costs nothing.
"""
import io
import logging
import sys
from typing import Optional

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from PIL import Image, ImageOps, UnidentifiedImageError

from transforms.lookahead import LookaheadDoFn
from transforms.records import (STAGE_DECODE, STAGE_READ, DecodedImage, failure_from_exception)

_LOG = logging.getLogger(__name__)
FAILED = "failed"
_EXIF_ORIENTATION = 0x0112
_GEOTIFF_PIXEL_SCALE = 33550
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class DecodeError(ValueError):
  """An input that is not a usable image; the message is shown to people."""


def _scale_sixteen_bit(values: np.ndarray) -> np.ndarray:
  """Full 0..65535 range to 0..255 with rounding (65535 -> 255)."""
  return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _grey_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
  """The single-channel rule for high-bit-depth modes.

  I;16: full 16-bit range scaled to 8 bits. I (int32): kept as is when it
  already fits 0..255, otherwise clipped to 0..65535 and scaled like 16-bit
  (the common case is 16-bit data stored as int32). F (float32): 0..1 is
  scaled by 255, 0..255 is kept, anything else is min-max stretched; NaN and
  infinities become 0.
  """
  if mode in _SIXTEEN_BIT_MODES:
    return _scale_sixteen_bit(values)
  if mode == "I":
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high <= 255:
      return values.astype(np.uint8)
    return _scale_sixteen_bit(np.clip(values, 0, 65535))
  values = np.where(np.isfinite(values), values, 0).astype(np.float32)
  low, high = float(values.min()), float(values.max())
  if low >= 0 and high <= 1:
    scaled = values * 255.0
  elif low >= 0 and high <= 255:
    scaled = values
  elif high > low:
    scaled = (values - low) * (255.0 / (high - low))
  else:
    scaled = np.zeros_like(values)
  return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> np.ndarray:
  """RGB uint8 [H, W, 3] for any supported mode.

  Alpha (RGBA, LA, PA, palette transparency) is dropped, keeping the stored
  colour: segmentation is about what was imaged, not how it is composited.
  1, L, P, CMYK and other 8-bit modes go through Pillow's own conversion.
  """
  mode = image.mode
  if mode == "RGB":
    return np.asarray(image)
  if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
    grey = _grey_to_uint8(np.asarray(image), mode)
    return np.repeat(grey[:, :, None], 3, axis=2)
  if mode == "P" and "transparency" in image.info:
    image = image.convert("RGBA")
  return np.asarray(image.convert("RGB"))


def _pixel_scale(image: Image.Image):
  """(x, y) size of a pixel from the GeoTIFF ModelPixelScale tag, if present."""
  tags = getattr(image, "tag_v2", None)
  if not tags or _GEOTIFF_PIXEL_SCALE not in tags:
    return None
  try:
    scale = tags[_GEOTIFF_PIXEL_SCALE]
    sx, sy = float(scale[0]), float(scale[1])
  except (TypeError, ValueError, IndexError):
    return None
  return (sx, sy) if sx > 0 and sy > 0 else None


def _png_fast_path(image: Image.Image, data: bytes):
  """RGB pixels via TensorFlow's PNG decoder for plain 8-bit RGB PNGs, else None.

  Why: PNG inflate is the pipeline's largest cost after the model (about
  12 ms per 512x512 noisy photo in Pillow, 9 ms in TensorFlow's libpng) and
  competes with the model for the same two cores. Only used when TensorFlow
  is already imported (inference workers) and only for files Pillow would
  turn into exactly the same array: 8-bit RGB, not animated, no
  transparency, no EXIF chunk (orientation). Anything unusual or any error
  returns None, and Pillow decodes (and reports failures) as before.
  """
  tf = sys.modules.get("tensorflow")
  if (tf is None or image.format != "PNG" or image.mode != "RGB" or len(image.tile) != 1
      or image.tile[0][3] not in ("RGB", ("RGB",)) or "transparency" in image.info
      or getattr(image, "is_animated", False) or b"eXIf" in data):
    return None
  try:
    pixels = tf.io.decode_png(data, channels=3, dtype=tf.uint8).numpy()
  except Exception:  # pylint: disable=broad-except  (Pillow decodes it and words the error)
    return None
  return pixels if pixels.shape == (image.size[1], image.size[0], 3) else None


def decode_image(data: bytes, max_pixels: int):
  """Returns (RGB uint8 array, pixel size or None); raises DecodeError."""
  if not data:
    raise DecodeError("file is empty (0 bytes)")
  try:
    image = Image.open(io.BytesIO(data))
  except UnidentifiedImageError:
    raise DecodeError("not a recognised image format (PNG, JPEG, TIFF, BMP, WebP, GIF)") from None
  except Image.DecompressionBombError as exc:
    raise DecodeError(f"image declares more pixels than Pillow allows ({exc}); it is refused as a "
                      "possible decompression bomb") from None
  except MemoryError:
    raise
  except Exception as exc:  # pylint: disable=broad-except  (Pillow raises many types on bad headers)
    raise DecodeError(f"image header is corrupt or truncated: {exc}") from None
  with image:
    width, height = image.size
    if width < 1 or height < 1:
      raise DecodeError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
      raise DecodeError(f"image is {width}x{height} = {width * height} pixels, more than "
                        f"--max_image_pixels={max_pixels}; raise the limit to process it")
    pixel_size = _pixel_scale(image)
    fast = _png_fast_path(image, data)
    if fast is not None:
      return fast, pixel_size
    try:
      if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
      image.load()
    except MemoryError:
      raise
    except Exception as exc:  # pylint: disable=broad-except
      raise DecodeError(f"image data is corrupt or truncated: {exc}") from None
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    oriented = ImageOps.exif_transpose(image) if orientation in range(2, 9) else image
    if orientation in (5, 6, 7, 8) and pixel_size:
      pixel_size = (pixel_size[1], pixel_size[0])
    try:
      pixels = to_rgb(oriented)
    except (OSError, ValueError) as exc:
      raise DecodeError(f"cannot convert mode {oriented.mode} to RGB: {exc}") from None
  return pixels, pixel_size


def read_bytes(uri: str) -> bytes:
  with FileSystems.open(uri, compression_type="uncompressed") as handle:
    return handle.read()


def _decode_ref(ref, max_pixels: int):
  """(DecodedImage, None) or (None, Failure) for one ref; never raises (runs on a pool thread)."""
  try:
    data = ref.data if ref.data is not None else read_bytes(ref.uri)
  except Exception as exc:  # pylint: disable=broad-except
    return None, failure_from_exception(ref.uri, ref.key, STAGE_READ, exc, f"cannot read file: {exc}")
  try:
    pixels, pixel_size = decode_image(data, max_pixels)
  except DecodeError as exc:
    return None, failure_from_exception(ref.uri, ref.key, STAGE_DECODE, exc)
  except MemoryError as exc:
    return None, failure_from_exception(
        ref.uri, ref.key, STAGE_DECODE, exc, "out of memory while decoding; lower --max_image_pixels")
  except Exception as exc:  # pylint: disable=broad-except
    _LOG.warning("Unexpected decode error for %s: %r", ref.uri, exc)
    return None, failure_from_exception(ref.uri, ref.key, STAGE_DECODE, exc, f"cannot decode image: {exc}")
  return DecodedImage(uri=ref.uri, key=ref.key, pixels=pixels, pixel_size=pixel_size), None


class DecodeImagesFn(LookaheadDoFn):
  """ImageRef -> DecodedImage; unreadable or undecodable inputs -> ``failed``.

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

  def __init__(self, max_image_pixels: int, prefetch: int = 0, prefetch_pixels: Optional[int] = None):
    super().__init__(prefetch, prefetch_pixels, "deconvseg-decode")
    self._max_pixels = max_image_pixels
    self._decoded = Metrics.counter("deconvseg", "images_decoded")
    self._pixels = Metrics.counter("deconvseg", "pixels_decoded")

  def setup(self):
    # decode_image checks the header against --max_image_pixels before any
    # pixel is decoded; Pillow's own guard (warn at N, refuse at 2N) would
    # only add a second, differently worded limit.
    Image.MAX_IMAGE_PIXELS = None
    super().setup()

  def _work(self, ref):
    return _decode_ref(ref, self._max_pixels)

  def _outputs(self, outcome):
    image, failure = outcome
    if failure is not None:
      yield beam.pvalue.TaggedOutput(FAILED, failure)
      return
    height, width = image.pixels.shape[:2]
    self._decoded.inc()
    self._pixels.inc(int(height) * int(width))
    if self._ahead is not None:
      self._ahead.sized(height * width)
    yield image


class DecodeImages(beam.PTransform):
  """Composite: returns (images, failures)."""

  def __init__(self, max_image_pixels: int, prefetch: int = 0, prefetch_pixels: Optional[int] = None):
    super().__init__()
    self._max_pixels = max_image_pixels
    self._prefetch = prefetch
    self._prefetch_pixels = prefetch_pixels

  def expand(self, refs):
    decode = DecodeImagesFn(self._max_pixels, self._prefetch, self._prefetch_pixels)
    outputs = refs | "DecodeBytes" >> beam.ParDo(decode).with_outputs(
        FAILED, main="images")
    return outputs.images, outputs[FAILED]
