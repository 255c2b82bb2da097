"""The mask file formats: palette PNG, and Cloud-Optimized GeoTIFF for georeferenced inputs.

Both hold one class id per pixel, the class colours (a PNG palette, a GeoTIFF
colour table) and the image's statistics record (a PNG iTXt chunk, a GDAL
metadata item), so ``--skip_existing``, ``pipeline.evaluate`` and the report
read either the same way (``decode_mask``). ``--mask_format`` picks:
``auto`` (default) writes GeoTIFF for inputs that carry a georeference (a CRS)
and PNG for the rest, ``png`` and ``geotiff`` force one. GeoTIFF masks need the geo
extra (``transforms.imaging.geo``).

The GeoTIFF mask has the input's CRS, geotransform and size, the class names
in its metadata (``CLASS_NAMES``, JSON, and band 1's description), internal
512-pixel tiles, DEFLATE, and nearest-neighbour overviews, so a GIS streams a
large scene without inventing classes when zoomed out.
"""

import io
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Optional, Tuple, overload

import numpy as np
from PIL import Image, PngImagePlugin

from transforms.imaging.records import MASKS_DIR
from transforms.imaging.tiff import is_tiff

if TYPE_CHECKING:
  from transforms.imaging.geo import Georef

MASK_FORMATS = ("auto", "png", "geotiff")
PNG, GEOTIFF = "png", "geotiff"
EXTENSIONS = {PNG: ".png", GEOTIFF: ".tif"}
STATS_CHUNK = "deconvseg:stats"
# GDAL metadata items of a GeoTIFF mask.
STATS_TAG = "DECONVSEG_STATS"
CLASS_NAMES_TAG = "CLASS_NAMES"
# Masks are long runs of a few values: zlib's run-length strategy (Z_RLE) on a
# palette packed to the fewest bits the classes need (4 bits for up to 16
# classes) is 2-5x faster than the default strategy at level 6 and a third
# smaller (512x512 masks of the default model: 0.8 ms and 3.3 KiB against
# 2.1 ms and 4.9 KiB; docs/PERFORMANCE.md). With Z_RLE the level changes
# little.
DEFAULT_MASK_COMPRESS_LEVEL = 6
MASK_ZLIB_STRATEGY = zlib.Z_RLE
GEOTIFF_BLOCK = 512


def mask_format_for(mask_format: str, georef: Optional["Georef"]) -> str:
  """The format one image's mask is written in: ``auto`` is GeoTIFF exactly when the image has a CRS.

  A geotransform alone (a TIFF with just a ModelPixelScale tag, say) places
  the image nowhere a GIS could show it; its pixel size still gives areas.
  """
  if mask_format == "auto":
    return GEOTIFF if georef is not None and georef.crs is not None else PNG
  return mask_format


def mask_relpath(key: str, fmt: str = PNG) -> str:
  return f"{MASKS_DIR}/{key}{EXTENSIONS[fmt]}"


def candidate_relpaths(key: str, mask_format: str) -> list[str]:
  """Where a finished mask of ``key`` can be for ``--mask_format`` (``auto``: either)."""
  formats = (GEOTIFF, PNG) if mask_format == "auto" else (mask_format,)
  return [mask_relpath(key, fmt) for fmt in formats]


def palette_bytes(classes: Sequence[Mapping[str, Any]]) -> list[int]:
  """The classes' colours as a flat RGB list, one entry per class.

  Only as many entries as classes: Pillow then packs the PNG to 1, 2 or 4
  bits per pixel when the classes fit (readers still get one class id per
  pixel). Class ids are checked against the class list before encoding.
  """
  palette: list[int] = []
  for entry in classes:
    palette.extend(int(v) for v in entry.get("color", [0, 0, 0])[:3])
  return palette or [0, 0, 0]


def encode_mask(class_ids: np.ndarray, palette: list[int], record: dict[str, Any], compress_level: int) -> bytes:
  """The palette PNG of a mask, its statistics record in an iTXt chunk."""
  image = Image.fromarray(class_ids)
  image.putpalette(palette)
  info = PngImagePlugin.PngInfo()
  info.add_itxt(STATS_CHUNK, json.dumps(record, separators=(",", ":")))
  buffer = io.BytesIO()
  image.save(buffer, format="PNG", compress_level=compress_level, compress_type=MASK_ZLIB_STRATEGY, pnginfo=info)
  return buffer.getvalue()


def encode_geotiff(
  class_ids: np.ndarray,
  georef: Optional["Georef"],
  classes: Sequence[Mapping[str, Any]],
  record: dict[str, Any],
  compress_level: int,
) -> bytes:
  """The Cloud-Optimized GeoTIFF of a mask: the input's CRS and transform, colour table, names, record.

  GDAL's COG driver only copies from another dataset, so the mask is first
  laid out as a plain in-memory GeoTIFF (uncompressed: cheap), then copied
  with tiles, DEFLATE and overviews. ``georef`` None writes a TIFF without a
  georeference (``--mask_format geotiff`` for a plain image).
  """
  import rasterio.shutil
  from rasterio.io import MemoryFile

  height, width = class_ids.shape
  profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8", photometric="palette")
  if georef is not None:
    profile.update(transform=georef.affine(), crs=georef.crs)
  names = [entry["name"] for entry in classes]
  with MemoryFile() as plain:
    with plain.open(**profile) as dataset:
      # The colour table before the pixels: libtiff fixes the photometric tag at the first write.
      dataset.write_colormap(1, {int(e["id"]): tuple(int(v) for v in e.get("color", [0, 0, 0])[:3]) for e in classes})
      dataset.write(class_ids, 1)
      dataset.set_band_description(1, "class id: " + ", ".join(f"{e['id']}={e['name']}" for e in classes))
      dataset.update_tags(**{CLASS_NAMES_TAG: json.dumps(names), STATS_TAG: json.dumps(record, separators=(",", ":"))})
    with MemoryFile() as cog:
      with plain.open() as source:
        rasterio.shutil.copy(
          source,
          cog.name,
          driver="COG",
          compress="DEFLATE",
          level=max(1, min(9, compress_level)),
          blocksize=GEOTIFF_BLOCK,
          overview_resampling="nearest",
        )
      return cog.read()


@overload
def decode_mask(data: bytes, with_pixels: Literal[True] = True) -> Tuple[np.ndarray, Optional[dict[str, Any]]]: ...


@overload
def decode_mask(data: bytes, with_pixels: bool) -> Tuple[Optional[np.ndarray], Optional[dict[str, Any]]]: ...


def decode_mask(data: bytes, with_pixels: bool = True) -> Tuple[Optional[np.ndarray], Optional[dict[str, Any]]]:
  """(class ids or None, statistics record or None) of a mask file in either format.

  A GeoTIFF mask is read with rasterio (it was written with it); without the
  geo extra, a ValueError says how to install it.
  """
  if is_tiff(data):
    return _decode_geotiff(data, with_pixels)
  with Image.open(io.BytesIO(data)) as image:
    record = image.info.get(STATS_CHUNK)
    class_ids = np.asarray(image) if with_pixels else None
  return class_ids, json.loads(record) if record else None


def _decode_geotiff(data: bytes, with_pixels: bool) -> Tuple[Optional[np.ndarray], Optional[dict[str, Any]]]:
  from transforms.imaging import geo

  if not geo.available():
    raise ValueError(f"this mask is a GeoTIFF; reading it needs the geo extra: {geo.GEO_EXTRA}")
  from rasterio.io import MemoryFile

  with MemoryFile(data) as memory, memory.open() as dataset:
    record = dataset.tags().get(STATS_TAG)
    class_ids = dataset.read(1) if with_pixels else None
  return class_ids, json.loads(record) if record else None
