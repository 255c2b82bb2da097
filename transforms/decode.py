"""Decode encoded image bytes into the array the model takes (its card's input spec).

For the default spec (RGB uint8) every Pillow mode the pipeline promises is
mapped to RGB uint8 by one documented rule (see ``to_rgb``). For any other
spec the file is first decoded at its own depth with all its bands
(``decode_native``: Pillow, or ``tifffile`` for TIFFs Pillow cannot represent
such as more than four samples, multi-sample 16-bit or planar data), then
``conform`` applies the band and depth rules, or refuses the image with a
message that says what it has and what the model takes. EXIF orientation is
applied so masks match what a viewer shows; animated images use their first
frame. The size check runs on the header before any pixel is decoded, so a
decompression bomb (a tiny file declaring a huge canvas) costs nothing.
"""

import io
import logging
import sys
from typing import NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from PIL import Image, ImageOps, UnidentifiedImageError

from transforms import accounting, geo
from transforms.display import display_stretch
from transforms.input_spec import DEFAULT_SPEC, InputSpec
from transforms.lookahead import LookaheadDoFn
from transforms.ood import image_features
from transforms.records import FAILED, STAGE_DECODE, STAGE_READ, DecodedImage, ImageHeader, failure_from_exception

_LOG = logging.getLogger(__name__)
_EXIF_ORIENTATION = 0x0112
_GEOTIFF_PIXEL_SCALE = 33550
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# What the file says its bands mean; decides which conversions are allowed.
GREY, GREY_ALPHA, RGB, RGBA, BANDS = "grey", "grey + alpha", "RGB", "RGBA", "bands"


class DecodeError(ValueError):
  """An input that is not a usable image; the message is shown to people."""


class NativeImage(NamedTuple):
  """An image as stored: [H, W, K] at the file's own sample type, orientation applied."""

  pixels: np.ndarray
  kind: str
  pixel_size: Optional[Tuple[float, float]] = None


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
  if (
    tf is None
    or image.format != "PNG"
    or image.mode != "RGB"
    or len(image.tile) != 1
    or image.tile[0][3] not in ("RGB", ("RGB",))
    or "transparency" in image.info
    or getattr(image, "is_animated", False)
    or b"eXIf" in data
  ):
    return None
  try:
    pixels = tf.io.decode_png(data, channels=3, dtype=tf.uint8).numpy()
  except Exception:  # pylint: disable=broad-except  (Pillow decodes it and words the error)
    return None
  return pixels if pixels.shape == (image.size[1], image.size[0], 3) else None


def _open(data: bytes) -> Image.Image:
  """Pillow's lazy open (header only), with its errors worded for people."""
  try:
    return Image.open(io.BytesIO(data))
  except UnidentifiedImageError:
    raise DecodeError("not a recognised image format (PNG, JPEG, TIFF, BMP, WebP, GIF)") from None
  except Image.DecompressionBombError as exc:
    raise DecodeError(
      f"image declares more pixels than Pillow allows ({exc}); it is refused as a possible decompression bomb"
    ) from None
  except MemoryError:
    raise
  except Exception as exc:  # pylint: disable=broad-except  (Pillow raises many types on bad headers)
    raise DecodeError(f"image header is corrupt or truncated: {exc}") from None


def _check_size(width: int, height: int, max_pixels: int):
  if width < 1 or height < 1:
    raise DecodeError(f"image has no pixels ({width}x{height})")
  if width * height > max_pixels:
    raise DecodeError(
      f"image is {width}x{height} = {width * height} pixels, more than "
      f"--max_image_pixels={max_pixels}; raise the limit to process it"
    )


def _load_first_frame(image: Image.Image):
  try:
    if getattr(image, "n_frames", 1) > 1:
      image.seek(0)
    image.load()
  except MemoryError:
    raise
  except Exception as exc:  # pylint: disable=broad-except
    raise DecodeError(f"image data is corrupt or truncated: {exc}") from None


def decode_image(data: bytes, max_pixels: int, spec: InputSpec = DEFAULT_SPEC):
  """Returns (pixels [H, W, spec.channels] of spec.dtype, pixel size or None); raises DecodeError.

  The default spec keeps the RGB uint8 path (and its PNG fast path) as it
  always was; TIFFs Pillow cannot open at all go through ``decode_native``
  and ``conform`` there too, so they fail with the band message rather than
  "not a recognised image format" (or, for 16-bit planar RGB, succeed).
  """
  if not data:
    raise DecodeError("file is empty (0 bytes)")
  if spec != DEFAULT_SPEC:
    native = decode_native(data, max_pixels)
    return conform(native, spec), native.pixel_size
  try:
    image = _open(data)
  except DecodeError:
    native = _tiff_native(data, max_pixels) if _is_tiff(data) else None
    if native is None:
      raise
    return conform(native, spec), native.pixel_size
  with image:
    width, height = image.size
    _check_size(width, height, max_pixels)
    pixel_size = _pixel_scale(image)
    fast = _png_fast_path(image, data)
    if fast is not None:
      return fast, pixel_size
    try:
      _load_first_frame(image)
    except DecodeError:
      native = _tiff_native(data, max_pixels) if _is_tiff(data) else None
      if native is None:
        raise
      return conform(native, spec), native.pixel_size
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    oriented = ImageOps.exif_transpose(image) if orientation in range(2, 9) else image
    if orientation in (5, 6, 7, 8) and pixel_size:
      pixel_size = (pixel_size[1], pixel_size[0])
    try:
      pixels = to_rgb(oriented)
    except (OSError, ValueError) as exc:
      raise DecodeError(f"cannot convert mode {oriented.mode} to RGB: {exc}") from None
  return pixels, pixel_size


# A GeoTIFF's band colour interpretations (rasterio names) as the band kinds above.
_GEO_BAND_KINDS = {
  ("gray", "alpha"): GREY_ALPHA,
  ("red", "green", "blue"): RGB,
  ("red", "green", "blue", "alpha"): RGBA,
}


def decode_located(data: bytes, max_pixels: int, spec: InputSpec = DEFAULT_SPEC):
  """(pixels, pixel size or None, ``geo.Georef`` or None); raises DecodeError.

  A GeoTIFF is read through rasterio with its CRS and geotransform (all its
  bands, then the same band and depth rules as any image); everything else,
  and every GeoTIFF when the geo extra is not installed, goes to
  ``decode_image``. GeoTIFFs carry no EXIF orientation: the geotransform
  says where each pixel lies.
  """
  if data and _is_tiff(data) and geo.looks_georeferenced(data):
    image = geo.read_georeferenced(data, lambda width, height: _check_size(width, height, max_pixels))
    if image is not None:
      kind = _GEO_BAND_KINDS.get(image.bands, GREY if len(image.bands) == 1 else BANDS)
      native = NativeImage(pixels=image.pixels, kind=kind, pixel_size=image.georef.pixel_size)
      return conform(native, spec), native.pixel_size, image.georef
  pixels, pixel_size = decode_image(data, max_pixels, spec)
  return pixels, pixel_size, None


def _is_tiff(data: bytes) -> bool:
  return data[:4] in _TIFF_MAGIC


_ORIENT = {
  2: lambda a: a[:, ::-1],
  3: lambda a: a[::-1, ::-1],
  4: lambda a: a[::-1],
  5: lambda a: a.transpose(1, 0, 2),
  6: lambda a: np.rot90(a, -1),
  7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
  8: lambda a: np.rot90(a, 1),
}


def _orient(pixels: np.ndarray, orientation, pixel_size):
  """EXIF/TIFF orientation 1-8 applied to [H, W, K] (as Pillow's exif_transpose); swaps the pixel size on 5-8."""
  try:
    orientation = int(orientation)
  except (TypeError, ValueError):
    return pixels, pixel_size
  if orientation not in _ORIENT:
    return pixels, pixel_size
  if orientation >= 5 and pixel_size:
    pixel_size = (pixel_size[1], pixel_size[0])
  return np.ascontiguousarray(_ORIENT[orientation](pixels)), pixel_size


def _tiff_native(data: bytes, max_pixels: int) -> Optional[NativeImage]:
  """First page of a TIFF through tifffile, or None to leave the file to Pillow.

  tifffile reads any number of samples at any depth, contiguous or planar
  (the sample axis is moved last either way). Photometric interpretations
  other than grey (min-is-black) and RGB (palette, min-is-white, CMYK,
  YCbCr), volumes, and compressions it cannot decode without extra codecs
  are left to Pillow, which also words the errors of corrupt files. The size
  check uses the header only.
  """
  import tifffile  # pylint: disable=import-outside-toplevel  (only TIFF inputs need it)

  try:
    tif = tifffile.TiffFile(io.BytesIO(data))
  except Exception:  # pylint: disable=broad-except
    return None
  with tif:
    try:
      page = tif.pages.first
      photometric = int(page.photometric)
      axes = page.axes
      width, height, samples = int(page.imagewidth), int(page.imagelength), int(page.samplesperpixel)
      extrasamples = [int(value) for value in page.extrasamples]
      tags = {code: page.tags.get(code) for code in (274, _GEOTIFF_PIXEL_SCALE)}
    except Exception:  # pylint: disable=broad-except
      return None
    if photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB) or set(axes) - set("YXS"):
      return None
    _check_size(width, height, max_pixels)
    try:
      pixels = page.asarray()
    except MemoryError:
      raise
    except Exception:  # pylint: disable=broad-except
      return None
  pixels = np.moveaxis(pixels, axes.index("S"), -1) if "S" in axes else pixels[:, :, None]
  if pixels.shape != (height, width, samples):
    return None
  alpha = bool(extrasamples) and extrasamples[-1] in (1, 2)  # associated or unassociated alpha
  if photometric == tifffile.PHOTOMETRIC.RGB:
    kind = RGBA if samples == 4 and alpha else RGB if samples == 3 else BANDS
  else:
    kind = GREY if samples == 1 else GREY_ALPHA if samples == 2 and alpha else BANDS
  pixel_size = None
  scale = tags[_GEOTIFF_PIXEL_SCALE]
  if scale is not None:
    try:
      sx, sy = float(scale.value[0]), float(scale.value[1])
      pixel_size = (sx, sy) if sx > 0 and sy > 0 else None
    except (TypeError, ValueError, IndexError):
      pixel_size = None
  orientation = tags[274].value if tags[274] is not None else 1
  pixels, pixel_size = _orient(pixels, orientation, pixel_size)
  return NativeImage(pixels=pixels, kind=kind, pixel_size=pixel_size)


# Pillow modes kept as they are, and what their bands mean.
_PILLOW_KINDS = {"L": GREY, "LA": GREY_ALPHA, "RGB": RGB, "RGBA": RGBA}
# Modes converted first (alpha kept where there is one); any other mode goes to RGB.
_PILLOW_CONVERT = {"1": "L", "PA": "RGBA", "La": "LA", "RGBa": "RGBA"}


def _sixteen_bit_png(image: Image.Image, data: bytes):
  """[H, W, K] uint16 for 16-bit colour or grey+alpha PNGs, which Pillow can only give as 8 bits; else None."""
  if image.format != "PNG" or len(data) < 26 or data[24] != 16 or data[25] not in (2, 4, 6):
    return None
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  (the only 16-bit colour PNG decoder at hand)

  try:
    return tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
  except Exception as exc:  # pylint: disable=broad-except
    raise DecodeError(f"image data is corrupt or truncated: {' '.join(str(exc).split())[:200]}") from None


def decode_native(data: bytes, max_pixels: int) -> NativeImage:
  """Every band at the file's own depth, orientation applied; raises DecodeError."""
  if not data:
    raise DecodeError("file is empty (0 bytes)")
  if _is_tiff(data):
    native = _tiff_native(data, max_pixels)
    if native is not None:
      return native
  image = _open(data)
  with image:
    width, height = image.size
    _check_size(width, height, max_pixels)
    pixel_size = _pixel_scale(image)
    wide = _sixteen_bit_png(image, data)
    # Pillow reads a PNG's orientation by loading it: for a 16-bit one only when it has an eXIf chunk.
    load = wide is None or b"eXIf" in data
    if load:
      _load_first_frame(image)
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if load else 1
    if wide is not None:
      kind = {2: GREY_ALPHA, 3: RGB, 4: RGBA}[wide.shape[2]]
      pixels, pixel_size = _orient(wide, orientation, pixel_size)
      return NativeImage(pixels=pixels, kind=kind, pixel_size=pixel_size)
    mode = image.mode
    try:
      if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        pixels, kind = np.asarray(image)[:, :, None], GREY
      else:
        if mode == "P":
          image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif mode not in _PILLOW_KINDS:
          image = image.convert(_PILLOW_CONVERT.get(mode, "RGB"))
        pixels, kind = np.asarray(image), _PILLOW_KINDS[image.mode]
        if pixels.ndim == 2:
          pixels = pixels[:, :, None]
    except (OSError, ValueError) as exc:
      raise DecodeError(f"cannot convert mode {mode}: {exc}") from None
  pixels, pixel_size = _orient(pixels, orientation, pixel_size)
  return NativeImage(pixels=pixels, kind=kind, pixel_size=pixel_size)


def _luminance(rgb: np.ndarray) -> np.ndarray:
  """ITU-R 601-2 luma of [H, W, 3], as Pillow's convert("L") computes it (exact for 8 bits)."""
  if np.issubdtype(rgb.dtype, np.integer) and rgb.dtype.itemsize <= 2:
    wide = rgb.astype(np.uint64)
    luma = (wide[:, :, 0] * 19595 + wide[:, :, 1] * 38470 + wide[:, :, 2] * 7471 + 0x8000) >> 16
    return luma.astype(rgb.dtype)[:, :, None]
  weights = np.array([0.299, 0.587, 0.114])
  return (rgb.astype(np.float64) @ weights).astype(rgb.dtype)[:, :, None]


def _band_words(bands: int, kind: str) -> str:
  noun = "band" if bands == 1 else "bands"
  return f"{bands} {noun}" if kind == BANDS else f"{bands} {noun} ({kind})"


def _to_depth(pixels: np.ndarray, dtype: str) -> np.ndarray:
  """The sample type the model takes.

  To uint8: today's rules (16-bit scaled by 1/257, wider integers kept when
  they fit 0..255 else treated as 16-bit, floats 0..1 x 255 else min-max).
  To uint16: 8-bit data is scaled by 257, so 0..255 maps onto the full
  0..65535 range (255 -> 65535) as a 16-bit sensor would have recorded it;
  other integers are clipped to 0..65535; floats 0..1 are scaled by 65535,
  others clipped.
  """
  if pixels.dtype == np.bool_:
    pixels = pixels.astype(np.uint8) * 255
  if pixels.dtype == np.dtype(dtype):
    return np.ascontiguousarray(pixels)
  if dtype == "uint8":
    mode = "I;16" if pixels.dtype == np.uint16 else "I" if np.issubdtype(pixels.dtype, np.integer) else "F"
    return _grey_to_uint8(pixels, mode)
  if pixels.dtype == np.uint8:
    return pixels.astype(np.uint16) * 257
  if np.issubdtype(pixels.dtype, np.integer):
    return np.clip(pixels, 0, 65535).astype(np.uint16)
  values = np.where(np.isfinite(pixels), pixels, 0).astype(np.float64)
  if values.size and values.min() >= 0 and values.max() <= 1:
    values = values * 65535.0
  return np.clip(np.rint(values), 0, 65535).astype(np.uint16)


def conform(native: NativeImage, spec: InputSpec) -> np.ndarray:
  """The model's [H, W, spec.channels] array of spec.dtype from a native image; raises DecodeError.

  Bands: equal counts are kept as they are; a one-band model takes the luma
  of RGB/RGBA (alpha dropped) and the grey of grey + alpha; a three-band
  model takes grey replicated and RGBA without its alpha. Anything else
  would be guessing which bands the model was trained on, so the image fails.
  """
  pixels, kind = native.pixels, native.kind
  if not pixels.dtype.isnative:
    pixels = pixels.astype(pixels.dtype.newbyteorder("="))
  bands, channels = pixels.shape[2], spec.channels
  if bands != channels:
    if channels == 1 and kind in (RGB, RGBA):
      pixels = _luminance(pixels[:, :, :3])
    elif channels == 1 and kind == GREY_ALPHA:
      pixels = pixels[:, :, :1]
    elif channels == 3 and kind in (GREY, GREY_ALPHA):
      pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    elif channels == 3 and kind == RGBA:
      pixels = pixels[:, :, :3]
    else:
      raise DecodeError(
        f"image has {_band_words(bands, kind)} but the model takes {channels} "
        f"(card.json input.channels); give it {channels}-band images or use a model "
        f"trained on {bands}"
      )
  return _to_depth(pixels, spec.dtype)


def read_bytes(uri: str) -> bytes:
  with FileSystems.open(uri, compression_type="uncompressed") as handle:
    return handle.read()


_GCS = []


def read_range(path: str, offset: int, length: int) -> bytes:
  """``length`` bytes at ``offset`` of a file (a TFRecord record's image, ``ImageRef.offset``).

  On Cloud Storage the reader's buffer is the range itself: Beam's default
  16 MiB read-ahead would download up to 16 MiB for every image.
  """
  if path.startswith("gs://"):
    if not _GCS:
      from apache_beam.io.gcp import gcsio  # pylint: disable=import-outside-toplevel

      _GCS.append(gcsio.GcsIO())
    handle = _GCS[0].open(path, "rb", read_buffer_size=max(1, length))
  else:
    handle = FileSystems.open(path, compression_type="uncompressed")
  with handle:
    handle.seek(offset)
    data = handle.read(length)
  if len(data) != length:
    raise IOError(f"{path} ends before byte {offset + length}: the shard changed after it was listed")
  return data


def _decode_ref(ref, max_pixels: int, spec: InputSpec = DEFAULT_SPEC, ood_range=(None, None)):
  """(DecodedImage, None, bytes read) or (None, Failure, bytes read) for one ref; never raises (pool thread).

  ``ood_range`` is the training split's per-band (p01, p99) for the image's
  out-of-distribution features (``transforms.ood``), or (None, None).
  """
  try:
    if ref.data is not None:
      data = ref.data
    elif ref.offset is not None:
      data = read_range(ref.path, ref.offset, ref.length)
    else:
      data = read_bytes(ref.uri)
  except Exception as exc:  # pylint: disable=broad-except
    return None, failure_from_exception(ref.uri, ref.key, STAGE_READ, exc, f"cannot read file: {exc}"), 0
  size = len(data)
  try:
    pixels, pixel_size, georef = decode_located(data, max_pixels, spec)
  except DecodeError as exc:
    return None, failure_from_exception(ref.uri, ref.key, STAGE_DECODE, exc), size
  except MemoryError as exc:
    return (
      None,
      failure_from_exception(
        ref.uri, ref.key, STAGE_DECODE, exc, "out of memory while decoding; lower --max_image_pixels"
      ),
      size,
    )
  except Exception as exc:  # pylint: disable=broad-except
    _LOG.warning("Unexpected decode error for %s: %r", ref.uri, exc)
    return None, failure_from_exception(ref.uri, ref.key, STAGE_DECODE, exc, f"cannot decode image: {exc}"), size
  return (
    DecodedImage(
      header=ImageHeader(
        uri=ref.uri,
        key=ref.key,
        height=pixels.shape[0],
        width=pixels.shape[1],
        pixel_size=pixel_size,
        display=display_stretch(pixels),
        ood=image_features(pixels, *ood_range),
        georef=georef,
      ),
      pixels=pixels,
    ),
    None,
    size,
  )


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

  def __init__(
    self,
    max_image_pixels: int,
    prefetch: int = 0,
    prefetch_pixels: Optional[int] = None,
    spec: InputSpec = DEFAULT_SPEC,
    ood_range=(None, None),
  ):
    super().__init__(prefetch, prefetch_pixels, "deconvseg-decode")
    self._max_pixels = max_image_pixels
    self._spec = spec
    self._ood_range = ood_range
    self._decoded = Metrics.counter("deconvseg", "images_decoded")
    self._pixels = Metrics.counter("deconvseg", "pixels_decoded")
    self._read = accounting.distribution(accounting.READ)

  def setup(self):
    # decode_image checks the header against --max_image_pixels before any
    # pixel is decoded; Pillow's own guard (warn at N, refuse at 2N) would
    # only add a second, differently worded limit.
    Image.MAX_IMAGE_PIXELS = None
    super().setup()

  def _work(self, ref):
    return _decode_ref(ref, self._max_pixels, self._spec, self._ood_range)

  def _outputs(self, outcome):
    image, failure, size = outcome
    if size:
      self._read.update(size)
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

  def __init__(
    self,
    max_image_pixels: int,
    prefetch: int = 0,
    prefetch_pixels: Optional[int] = None,
    spec: InputSpec = DEFAULT_SPEC,
    ood_range=(None, None),
  ):
    super().__init__()
    self._max_pixels = max_image_pixels
    self._prefetch = prefetch
    self._prefetch_pixels = prefetch_pixels
    self._spec = spec
    self._ood_range = ood_range

  def expand(self, refs):
    decode = DecodeImagesFn(self._max_pixels, self._prefetch, self._prefetch_pixels, self._spec, self._ood_range)
    outputs = refs | "DecodeBytes" >> beam.ParDo(decode).with_outputs(FAILED, main="images")
    return outputs.images, outputs[FAILED]
