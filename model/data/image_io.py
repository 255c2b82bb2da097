"""Read training images and masks at their native bit depth and band count.

Training data is not always 8-bit RGB: microscopy is often 16-bit greyscale,
remote sensing brings 4+ band (RGB + near infrared) TIFFs. Decoding those with
an RGB-only reader would silently drop bands or rescale 16-bit data, so
images come back exactly as stored, [H, W, C] uint8 or uint16, and anything
that cannot be represented that way is an error that says what to convert to.
TIFF goes through tifffile (Pillow stops at 4 bands and at 16-bit greyscale);
everything else through Pillow.

Masks are single-channel class ids (255 = ignore). A colour mask is the most
common mistake in user data (an annotation tool's RGB export), and reading
one as ids would train on nonsense, so it is rejected with how to convert it.
"""

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tifffile
from PIL import Image, ImageOps

from model.data.classes import IGNORE_LABEL, SegmentationClass

# An image or mask: a path, or its encoded bytes.
Source = str | os.PathLike[str] | bytes | bytearray | memoryview

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_EXTENSION = ".png"

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_EXIF_ORIENTATION = 0x0112
_MASK_HOW_TO = (
  "save one channel of class ids (0..n-1, 255 = ignore), e.g. a palette PNG whose palette indices are the ids"
)


class ImageFormatError(ValueError):
  """An image that cannot be read as [H, W, C] uint8/uint16; the message says what to convert it to."""


class MaskFormatError(ValueError):
  """A mask that is not one channel of class ids; the message says how to convert it."""


def _name(source: Source, name: str | None) -> str:
  if name is not None:
    return name
  return "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)


def _head(source: Source, size: int = 32) -> bytes:
  if isinstance(source, (bytes, bytearray, memoryview)):
    return bytes(source[:size])
  with open(source, "rb") as handle:
    return handle.read(size)


def _file(source: Source) -> str | io.BytesIO:
  """A path or a binary file object over bytes, for Pillow and tifffile alike."""
  return io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)


def _is_tiff(source: Source) -> bool:
  return _head(source, 4) in _TIFF_MAGIC


def _png_bit_depth(head: bytes) -> tuple[int, int] | None:
  """(bit depth, colour type) from a PNG's IHDR, or None for other formats."""
  if not head.startswith(_PNG_MAGIC) or head[12:16] != b"IHDR":
    return None
  return head[24], head[25]


def _reject_deep_colour_png(source: Source, name: str) -> None:
  # Pillow reads 16-bit RGB, RGBA and grey+alpha PNGs reduced to 8 bits without a word.
  header = _png_bit_depth(_head(source))
  if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
    raise ImageFormatError(
      f"{name} is a 16-bit colour PNG, which can only be read here reduced to 8 bits; "
      "save it as a 16-bit TIFF (tifffile.imwrite(path, array, photometric='rgb')) or as an 8-bit PNG"
    )


def _native_integer(array: np.ndarray, name: str, what: str = "image") -> np.ndarray:
  """uint8/uint16 as is; wider integers only when their values fit 16 bits; anything else is an error."""
  if array.dtype == np.uint8 or array.dtype == np.uint16:
    return array.astype(array.dtype.newbyteorder("="), copy=False)
  if array.dtype == np.bool_:
    raise ImageFormatError(f"{name} is a 1-bit (black and white) {what}; save it as 8-bit greyscale (Pillow mode L)")
  if np.issubdtype(array.dtype, np.integer):
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if low >= 0 and high <= np.iinfo(np.uint16).max:
      return array.astype(np.uint16)
    raise ImageFormatError(
      f"{name} holds {array.dtype} values {low}..{high}, beyond unsigned 16 bits; "
      "rescale it to 0..65535 and save it as uint16 (or to 0..255 as uint8)"
    )
  raise ImageFormatError(
    f"{name} is a {array.dtype} {what}; convert it to uint8 or uint16 "
    "(e.g. scale to 0..65535 and save as a 16-bit TIFF with tifffile)"
  )


def _tiff_page(tiff: Any, name: str) -> Any:
  if not len(tiff.pages):
    raise ImageFormatError(f"{name} is a TIFF with no image pages")
  return tiff.pages[0]


def _tiff_layout(page: Any, name: str) -> str:
  """The page's sample axis position and its [H, W] axes, for contiguous and planar configurations alike."""
  axes = page.axes
  spatial = [axis for axis in axes if axis not in "YXS"]
  if spatial and any(page.shape[axes.index(axis)] != 1 for axis in spatial):
    raise ImageFormatError(
      f"{name} is a TIFF page with axes {axes} {page.shape}; save each image as one 2-D page of Y, X and samples"
    )
  return axes


def _tiff_to_hwc(array: np.ndarray, axes: str) -> np.ndarray:
  """Move the sample axis last (it comes first in planar TIFFs) and drop singleton extras."""
  keep = [axis for axis in axes if axis in "YXS"]
  array = array.reshape([size for axis, size in zip(axes, array.shape) if axis in keep])
  if "S" not in keep:
    return array[:, :, None]
  order = [keep.index("Y"), keep.index("X"), keep.index("S")]
  return np.transpose(array, order)


def _read_tiff(source: Source, name: str, as_mask: bool = False) -> np.ndarray | None:
  with tifffile.TiffFile(_file(source)) as tiff:
    page = _tiff_page(tiff, name)
    axes = _tiff_layout(page, name)
    try:
      array = page.asarray()
    except (ValueError, KeyError) as exc:
      if "imagecodecs" not in str(exc):
        raise ImageFormatError(f"{name} cannot be decoded: {exc}") from None
      return None  # a codec tifffile lacks (LZW, JPEG): let Pillow's libtiff try
    palette = page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None
    array = _tiff_to_hwc(array, axes)
    if palette and not as_mask:
      # TIFF colormaps are 16-bit, conventionally v * 257 for an 8-bit colour v.
      colormap = (np.asarray(page.colormap) >> 8).astype(np.uint8)
      array = colormap[:, array[:, :, 0]].transpose(1, 2, 0)
  return array


def _open_pillow(source: Source, name: str) -> Image.Image:
  try:
    image = Image.open(_file(source))
    if getattr(image, "n_frames", 1) > 1:
      image.seek(0)
    image.load()
  except Image.DecompressionBombError:
    raise ImageFormatError(
      f"{name} is larger than Pillow's decompression-bomb limit; save it as a TIFF (read with tifffile, no limit)"
    ) from None
  except (OSError, SyntaxError, ValueError) as exc:
    raise ImageFormatError(f"{name} cannot be read as an image: {exc}") from None
  orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
  return ImageOps.exif_transpose(image) if orientation in range(2, 9) else image


def _open_tiff_with_pillow(source: Source, name: str) -> Image.Image:
  """Pillow's libtiff for the compressions tifffile decodes only with imagecodecs (LZW, JPEG), where Pillow's modes suffice."""
  try:
    image = _open_pillow(source, name)
  except ImageFormatError:
    image = None
  if image is None or image.mode not in ("L", "LA", "RGB", "RGBA", "P", *_SIXTEEN_BIT_MODES):
    raise ImageFormatError(
      f"{name} is compressed with a codec that needs the imagecodecs package (pip install imagecodecs); "
      "or re-save it uncompressed or with zlib/deflate compression"
    )
  return image


def _pillow_to_hwc(image: Image.Image, name: str) -> np.ndarray:
  mode = image.mode
  if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F", "1"):
    return _native_integer(np.asarray(image), name)[:, :, None]
  if mode == "L":
    return np.asarray(image)[:, :, None]
  if mode == "LA":
    return np.asarray(image)[:, :, :1]
  if mode == "RGB":
    return np.asarray(image)
  if mode == "RGBA":
    return np.asarray(image)[:, :, :3]
  try:
    return np.asarray(image.convert("RGB"))
  except (OSError, ValueError) as exc:
    raise ImageFormatError(f"{name} has Pillow mode {mode}, which cannot be converted to RGB: {exc}") from None


def read_image(source: Source, name: str | None = None) -> np.ndarray:
  """[H, W, C] uint8 or uint16 pixels of a path or encoded bytes, at native depth (never rescaled).

  Greyscale gives C=1, RGB C=3, multi-sample TIFF C=N (first page; the
  sample axis is found for contiguous and planar TIFFs). Alpha is dropped
  (RGBA -> 3 channels, LA -> 1): it is transparency, not a band the model
  should learn from. Palette images become RGB; 16-bit PNGs stay uint16.
  JPEG/PNG EXIF orientation is applied, so pixels are as displayed, which is
  what the pipeline segments. ``name`` labels errors for bytes sources.
  """
  name = _name(source, name)
  if _is_tiff(source):
    array = _read_tiff(source, name)
    if array is not None:
      return _native_integer(array, name)
    return _pillow_to_hwc(_open_tiff_with_pillow(source, name), name)
  _reject_deep_colour_png(source, name)
  return _pillow_to_hwc(_open_pillow(source, name), name)


def _mask_ids(array: np.ndarray, name: str) -> np.ndarray:
  """uint8 ids from an integer array, accepting 16-bit storage when every value fits 0..255."""
  if array.dtype == np.uint8:
    return array
  if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
    raise MaskFormatError(f"{name} is a {array.dtype} mask; {_MASK_HOW_TO}")
  low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
  if low < 0 or high > IGNORE_LABEL:
    raise MaskFormatError(
      f"{name} holds values {low}..{high}; class ids must be 0..254 with 255 = ignore ({_MASK_HOW_TO})"
    )
  return array.astype(np.uint8)


def _check_palette(image: Image.Image, ids: np.ndarray, classes: Sequence[SegmentationClass], name: str) -> None:
  """A palette mask whose colours (not indices) match the class colours was drawn by colour: reject it."""
  palette = image.getpalette() or []
  color_to_class = {tuple(c.color): c for c in classes}
  for index in np.unique(ids):
    index = int(index)
    if index == IGNORE_LABEL:
      continue
    color = tuple(palette[3 * index : 3 * index + 3])
    own = classes[index].color if index < len(classes) else None
    other = color_to_class.get(color)
    if other is not None and other.id != index and tuple(own or ()) != color:
      raise MaskFormatError(
        f"{name} is a palette image whose colours, not its indices, mark the classes "
        f"(index {index} is drawn in {other.name}'s colour {list(color)}, but id {index} is "
        f"{classes[index].name if own is not None else 'not a class'}); {_MASK_HOW_TO}"
      )


def read_mask(
  source: Source, name: str | None = None, classes: Sequence[SegmentationClass] | None = None
) -> np.ndarray:
  """[H, W] uint8 class ids (255 = ignore) of a path or encoded bytes.

  Accepted: 8-bit greyscale; a palette PNG, whose *indices* are the ids
  (the VOC convention, so masks also look right in a viewer); 16-bit
  storage when every value is below 256. Rejected with how to convert:
  RGB/RGBA and other colour masks, alpha, 1-bit, float. With ``classes``
  (SegmentationClass list) a palette mask whose colours match the class
  colours at the wrong indices is rejected too: it was drawn by colour.
  """
  name = _name(source, name)
  if _is_tiff(source):
    try:
      array = _read_tiff(source, name, as_mask=True)
    except ImageFormatError as exc:
      raise MaskFormatError(str(exc)) from None
    if array is not None:
      if array.shape[2] != 1:
        raise MaskFormatError(f"{name} has {array.shape[2]} channels, not one channel of class ids; {_MASK_HOW_TO}")
      return _mask_ids(array[:, :, 0], name)
  header = _png_bit_depth(_head(source))
  try:
    image = _open_pillow(source, name)
  except ImageFormatError as exc:
    raise MaskFormatError(str(exc)) from None
  mode = image.mode
  if header is not None and header[0] == 16 and header[1] != 0:
    raise MaskFormatError(f"{name} is a 16-bit colour PNG, not one channel of class ids; {_MASK_HOW_TO}")
  if mode == "P":
    ids = np.asarray(image)
    if classes is not None:
      _check_palette(image, ids, classes, name)
    return ids
  if mode == "L" or mode in _SIXTEEN_BIT_MODES or mode == "I":
    return _mask_ids(np.asarray(image), name)
  if mode in ("RGB", "RGBA"):
    rgb = np.asarray(image)[:, :, :3]
    hint = ""
    if (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all():
      hint = " (its three channels are identical, so saving just one of them is enough)"
    raise MaskFormatError(f"{name} is an {mode} colour mask, not one channel of class ids{hint}; {_MASK_HOW_TO}")
  if mode == "1":
    raise MaskFormatError(f"{name} is a 1-bit mask; save it as 8-bit greyscale (mode L) with ids 0 and 1")
  raise MaskFormatError(f"{name} has Pillow mode {mode}, not one channel of class ids; {_MASK_HOW_TO}")


_PILLOW_MODES = {
  "L": (1, "uint8"),
  "LA": (1, "uint8"),
  "RGB": (3, "uint8"),
  "RGBA": (3, "uint8"),
  "P": (3, "uint8"),
  "PA": (3, "uint8"),
  "CMYK": (3, "uint8"),
  "YCbCr": (3, "uint8"),
  **{mode: (1, "uint16") for mode in _SIXTEEN_BIT_MODES},
}


def image_info(source: Source, name: str | None = None) -> tuple[int, int, int, str]:
  """(height, width, channels, dtype_name) as read_image would return them, from the header where possible."""
  name = _name(source, name)
  if _is_tiff(source):
    with tifffile.TiffFile(_file(source)) as tiff:
      page = _tiff_page(tiff, name)
      axes = _tiff_layout(page, name)
      sizes = dict(zip(axes, page.shape))
      if page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None:
        return sizes["Y"], sizes["X"], 3, "uint8"
      if page.dtype in (np.uint8, np.uint16):
        return sizes["Y"], sizes["X"], sizes.get("S", 1), np.dtype(page.dtype).name
  else:
    _reject_deep_colour_png(source, name)
    try:
      with Image.open(_file(source)) as image:
        mode, (width, height) = image.mode, image.size
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError) as exc:
      raise ImageFormatError(f"{name} cannot be read as an image: {exc}") from None
    if mode in _PILLOW_MODES:
      if orientation in (5, 6, 7, 8):
        width, height = height, width
      return (height, width) + _PILLOW_MODES[mode]
  array = read_image(source, name)
  return array.shape + (array.dtype.name,)
