"""One image's bytes to the array the model takes (its card's input spec), without Beam.

For the default spec (RGB uint8) every Pillow mode the pipeline promises is
mapped to RGB uint8 by one documented rule (``transforms.imaging.bands.to_rgb``). For
any other spec the file is first decoded at its own depth with all its bands
(``decode_native``: Pillow, or ``tifffile`` for TIFFs Pillow cannot represent
such as more than four samples, multi-sample 16-bit or planar data,
``transforms.imaging.tiff``), then ``transforms.imaging.bands.conform`` applies the band and
depth rules. GeoTIFFs go through rasterio (``transforms.imaging.geo``) when the geo
extra is installed. EXIF orientation is applied so masks match what a viewer
shows; animated images use their first frame. The size check runs on the
header before any pixel is decoded, so a decompression bomb (a tiny file
declaring a huge canvas) costs nothing.
"""

import io
import sys
from functools import partial
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from model.text import one_line
from transforms.imaging import geo
from transforms.imaging.bands import (
  GREY,
  GREY_ALPHA,
  RGB,
  RGBA,
  SIXTEEN_BIT_MODES,
  DecodeError,
  NativeImage,
  conform,
  kind_of_colours,
  to_rgb,
)
from transforms.imaging.input_spec import DEFAULT_SPEC, InputSpec
from transforms.imaging.tiff import GEOTIFF_PIXEL_SCALE, is_tiff, orient, tiff_native

_EXIF_ORIENTATION = 0x0112


def _pixel_scale(image: Image.Image) -> Optional[Tuple[float, float]]:
  """(x, y) size of a pixel from the GeoTIFF ModelPixelScale tag, if present."""
  tags = getattr(image, "tag_v2", None)
  if not tags or GEOTIFF_PIXEL_SCALE not in tags:
    return None
  try:
    scale = tags[GEOTIFF_PIXEL_SCALE]
    sx, sy = float(scale[0]), float(scale[1])
  except (TypeError, ValueError, IndexError):
    return None
  return (sx, sy) if sx > 0 and sy > 0 else None


def _png_fast_path(image: ImageFile.ImageFile, data: bytes) -> Optional[np.ndarray]:
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
  except Exception:  # Pillow decodes it and words the error
    return None
  return pixels if pixels.shape == (image.size[1], image.size[0], 3) else None


def _open(data: bytes) -> ImageFile.ImageFile:
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
  except Exception as exc:  # Pillow raises many types on bad headers
    raise DecodeError(f"image header is corrupt or truncated: {exc}") from None


def check_size(width: int, height: int, max_pixels: int) -> None:
  if width < 1 or height < 1:
    raise DecodeError(f"image has no pixels ({width}x{height})")
  if width * height > max_pixels:
    raise DecodeError(
      f"image is {width}x{height} = {width * height} pixels, more than "
      f"--max_image_pixels={max_pixels}; raise the limit to process it"
    )


def _load_first_frame(image: Image.Image) -> None:
  try:
    if getattr(image, "n_frames", 1) > 1:
      image.seek(0)
    image.load()
  except MemoryError:
    raise
  except Exception as exc:
    raise DecodeError(f"image data is corrupt or truncated: {exc}") from None


def decode_image(
  data: bytes, max_pixels: int, spec: InputSpec = DEFAULT_SPEC
) -> Tuple[np.ndarray, Optional[Tuple[float, float]]]:
  """Returns (pixels [H, W, spec.channels] of spec.dtype, pixel size or None); raises DecodeError.

  The default spec keeps the RGB uint8 path (and its PNG fast path) as it
  always was; TIFFs Pillow cannot open at all go through ``decode_native``
  and ``conform`` there too, so they fail with the band message rather than
  "not a recognised image format" (or, for 16-bit planar RGB, succeed).
  """
  if not data:
    raise DecodeError("file is empty (0 bytes)")
  if spec != DEFAULT_SPEC:
    whole = decode_native(data, max_pixels)
    return conform(whole, spec), whole.pixel_size
  try:
    image = _open(data)
  except DecodeError:
    native = tiff_native(data, partial(check_size, max_pixels=max_pixels)) if is_tiff(data) else None
    if native is None:
      raise
    return conform(native, spec), native.pixel_size
  with image:
    width, height = image.size
    check_size(width, height, max_pixels)
    pixel_size = _pixel_scale(image)
    fast = _png_fast_path(image, data)
    if fast is not None:
      return fast, pixel_size
    try:
      _load_first_frame(image)
    except DecodeError:
      native = tiff_native(data, partial(check_size, max_pixels=max_pixels)) if is_tiff(data) else None
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


def decode_located(
  data: bytes, max_pixels: int, spec: InputSpec = DEFAULT_SPEC
) -> Tuple[np.ndarray, Optional[Tuple[float, float]], Optional[geo.Georef]]:
  """(pixels, pixel size or None, ``geo.Georef`` or None); raises DecodeError.

  A GeoTIFF is read through rasterio with its CRS and geotransform (all its
  bands, then the same band and depth rules as any image); everything else,
  and every GeoTIFF when the geo extra is not installed, goes to
  ``decode_image``. GeoTIFFs carry no EXIF orientation: the geotransform
  says where each pixel lies.
  """
  if data and is_tiff(data) and geo.looks_georeferenced(data):
    image = geo.read_georeferenced(data, partial(check_size, max_pixels=max_pixels))
    if image is not None:
      kind = kind_of_colours(image.bands)
      native = NativeImage(pixels=image.pixels, kind=kind, pixel_size=image.georef.pixel_size)
      return conform(native, spec), native.pixel_size, image.georef
  pixels, pixel_size = decode_image(data, max_pixels, spec)
  return pixels, pixel_size, None


# Pillow modes kept as they are, and what their bands mean.
_PILLOW_KINDS = {"L": GREY, "LA": GREY_ALPHA, "RGB": RGB, "RGBA": RGBA}


# Modes converted first (alpha kept where there is one); any other mode goes to RGB.
_PILLOW_CONVERT = {"1": "L", "PA": "RGBA", "La": "LA", "RGBa": "RGBA"}


def _sixteen_bit_png(image: Image.Image, data: bytes) -> Optional[np.ndarray]:
  """[H, W, K] uint16 for 16-bit colour or grey+alpha PNGs, which Pillow can only give as 8 bits; else None.

  Decoded by pypng (pure Python, so no TensorFlow in the process) with its
  plain ``read``: the file's own bands, a tRNS colour not turned into alpha
  and sBIT not applied, which is what TensorFlow's ``decode_png`` gave.
  """
  if image.format != "PNG" or len(data) < 26 or data[24] != 16 or data[25] not in (2, 4, 6):
    return None
  import png

  try:
    width, height, rows, info = png.Reader(bytes=data).read()
    values = bytearray().join(row.tobytes() for row in rows)  # writable, as a decoded image is elsewhere
  except MemoryError:
    raise
  except Exception as exc:  # pypng raises its own errors, zlib.error, ValueError, ...
    raise DecodeError(f"image data is corrupt or truncated: {one_line(exc, 200)}") from None
  planes = info["planes"]
  if len(values) != width * height * planes * 2:
    raise DecodeError(f"image data is corrupt or truncated: {len(values) // (width * planes * 2)} of {height} rows")
  return np.frombuffer(values, np.uint16).reshape(height, width, planes)


def decode_native(data: bytes, max_pixels: int) -> NativeImage:
  """Every band at the file's own depth, orientation applied; raises DecodeError."""
  if not data:
    raise DecodeError("file is empty (0 bytes)")
  if is_tiff(data):
    native = tiff_native(data, partial(check_size, max_pixels=max_pixels))
    if native is not None:
      return native
  image: Image.Image = _open(data)  # converted below to the mode it is read in
  with image:
    width, height = image.size
    check_size(width, height, max_pixels)
    pixel_size = _pixel_scale(image)
    wide = _sixteen_bit_png(image, data)
    # Pillow reads a PNG's orientation by loading it: for a 16-bit one only when it has an eXIf chunk.
    load = wide is None or b"eXIf" in data
    if load:
      _load_first_frame(image)
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if load else 1
    if wide is not None:
      kind = {2: GREY_ALPHA, 3: RGB, 4: RGBA}[wide.shape[2]]
      pixels, pixel_size = orient(wide, orientation, pixel_size)
      return NativeImage(pixels=pixels, kind=kind, pixel_size=pixel_size)
    mode = image.mode
    try:
      if mode in SIXTEEN_BIT_MODES or mode in ("I", "F"):
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
  pixels, pixel_size = orient(pixels, orientation, pixel_size)
  return NativeImage(pixels=pixels, kind=kind, pixel_size=pixel_size)
