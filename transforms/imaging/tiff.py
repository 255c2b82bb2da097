"""TIFFs that Pillow cannot represent, read through tifffile, and the EXIF/TIFF orientation rule.

tifffile reads any number of samples at any depth, contiguous or planar, so
a 16-bit multi-band or planar TIFF reaches the band rules
(``transforms.imaging.bands``) at its own depth. ``orient`` applies orientation 1-8
to an array as Pillow's ``exif_transpose`` does to an image, for every
decoder that reads pixels without Pillow.
"""

import io
from collections.abc import Callable
from typing import Any, Optional, Tuple

import numpy as np

from transforms.imaging.bands import BANDS, GREY, GREY_ALPHA, RGB, RGBA, NativeImage

GEOTIFF_PIXEL_SCALE = 33550
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_tiff(data: bytes) -> bool:
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


def orient(
  pixels: np.ndarray, orientation: Any, pixel_size: Optional[Tuple[float, float]]
) -> Tuple[np.ndarray, Optional[Tuple[float, float]]]:
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


def tiff_native(data: bytes, check_size: Callable[[int, int], object]) -> Optional[NativeImage]:
  """First page of a TIFF through tifffile, or None to leave the file to Pillow.

  tifffile reads any number of samples at any depth, contiguous or planar
  (the sample axis is moved last either way). Photometric interpretations
  other than grey (min-is-black) and RGB (palette, min-is-white, CMYK,
  YCbCr), volumes, and compressions it cannot decode without extra codecs
  are left to Pillow, which also words the errors of corrupt files.
  ``check_size(width, height)`` raises for an image too large; it is given
  the header's size, before any pixel is read.
  """
  import tifffile  # only TIFF inputs need it

  try:
    tif = tifffile.TiffFile(io.BytesIO(data))
  except Exception:  # whatever tifffile cannot parse, Pillow reads or words the error
    return None
  with tif:
    try:
      page = tif.pages.first
      photometric = int(page.photometric)
      axes = page.axes
      width, height, samples = int(page.imagewidth), int(page.imagelength), int(page.samplesperpixel)
      extrasamples = [int(value) for value in page.extrasamples]
      tags = {code: page.tags.get(code) for code in (274, GEOTIFF_PIXEL_SCALE)}
    except Exception:
      return None
    if photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB) or set(axes) - set("YXS"):
      return None
    check_size(width, height)
    try:
      pixels = page.asarray()
    except MemoryError:
      raise
    except Exception:
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
  scale = tags[GEOTIFF_PIXEL_SCALE]
  if scale is not None:
    try:
      sx, sy = float(scale.value[0]), float(scale.value[1])
      pixel_size = (sx, sy) if sx > 0 and sy > 0 else None
    except (TypeError, ValueError, IndexError):
      pixel_size = None
  orientation = tags[274].value if tags[274] is not None else 1
  pixels, pixel_size = orient(pixels, orientation, pixel_size)
  return NativeImage(pixels=pixels, kind=kind, pixel_size=pixel_size)
