"""Georeferenced rasters: reading GeoTIFFs, their georeference, and class areas in real units.

A GeoTIFF input is read through rasterio (GDAL) so that its coordinate
reference system (CRS) and geotransform come with the pixels; they ride along
as a ``Georef`` to the mask writer (``transforms.geotiff``), the statistics
record and the polygons (``transforms.imaging.polygons``). Areas follow the CRS:

* projected CRS: the pixel's area from the geotransform, in the CRS's linear
  unit converted to metres (a US survey foot CRS gives m² too);
* geographic CRS (degrees): geodesic, with pyproj's ``Geod`` on the CRS's own
  ellipsoid, one pixel row at a time (all pixels of a north-up row have the
  same area), so a pixel near 60° N counts about half of one at the equator;
* a geotransform without a CRS: the transform's pixel size in ``--pixel_unit``
  (the behaviour of the GeoTIFF ModelPixelScale tag before there was a CRS).

rasterio, pyproj and shapely are the optional ``geo`` extra
(``pip install -c requirements.lock -e '.[geo]'``): they are imported only
when a run needs them, and without them GeoTIFFs are read as plain TIFFs, as
before (pixel size from the scale tag, no CRS).
"""

import functools
import logging
import struct
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Tuple

import numpy as np

if TYPE_CHECKING:
  from affine import Affine

_LOG = logging.getLogger(__name__)
GEO_EXTRA = "pip install -c requirements.lock -e '.[geo]'"
# How a record's areas were computed (stats "area_method").
AREA_PROJECTED = "projected"
AREA_GEODESIC = "geodesic"
AREA_TRANSFORM = "geotransform"
AREA_PIXEL_SIZE = "pixel_size"
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# TIFF tags that make a file georeferenced: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
_GEOTIFF_TAGS = frozenset((33550, 33922, 34264, 34735))


class Georef(NamedTuple):
  """Where an image lies: its CRS (WKT, None when the file has only a geotransform) and geotransform.

  ``transform`` is the affine (a, b, c, d, e, f) of rasterio/``affine``:
  x = a·col + b·row + c, y = d·col + e·row + f, for pixel corners.
  """

  crs: Optional[str]
  transform: Tuple[float, float, float, float, float, float]
  epsg: Optional[int] = None

  @property
  def crs_label(self) -> Optional[str]:
    """``EPSG:<code>`` when the CRS has one, else its WKT (None without a CRS)."""
    return f"EPSG:{self.epsg}" if self.epsg else self.crs

  @property
  def pixel_size(self) -> Tuple[float, float]:
    """(x, y) ground size of a pixel in the CRS's units (column and row vector lengths)."""
    a, b, _, d, e, _ = self.transform
    return (float(np.hypot(a, d)), float(np.hypot(b, e)))

  def affine(self) -> "Affine":
    from affine import Affine

    return Affine(*self.transform)


def north_up(west: float, north: float, xsize: float, ysize: float) -> "Affine":
  """The ``affine.Affine`` geotransform of a north-up grid whose top-left corner is (west, north).

  rasterio's ``from_origin`` gives the same, through an operator ``affine`` 3 deprecates.
  """
  from affine import Affine

  return Affine(xsize, 0.0, west, 0.0, -ysize, north)


class GeoImage(NamedTuple):
  """A georeferenced raster as read: [H, W, K] at the file's own type, its bands' colour names, where it lies."""

  pixels: np.ndarray
  bands: Tuple[str, ...]
  georef: Georef


@functools.lru_cache(maxsize=None)
def available() -> bool:
  """Whether the geo extra (rasterio, pyproj, shapely) is installed."""
  try:
    import pyproj  # noqa: F401
    import rasterio  # noqa: F401
    import shapely  # noqa: F401
  except ImportError:
    return False
  return True


def _first_directory_tags(data: bytes) -> frozenset[int]:
  """Tag ids of a TIFF's first image directory (classic or BigTIFF); empty when its header is unreadable."""
  order = {b"II": "<", b"MM": ">"}.get(bytes(data[:2]))
  if order is None:  # not a TIFF byte order
    return frozenset()
  try:
    version = struct.unpack_from(order + "H", data, 2)[0]
    if version == 42:
      offset = struct.unpack_from(order + "I", data, 4)[0]
      count, entries, entry_size = struct.unpack_from(order + "H", data, offset)[0], offset + 2, 12
    elif version == 43:
      offset = struct.unpack_from(order + "Q", data, 8)[0]
      count, entries, entry_size = struct.unpack_from(order + "Q", data, offset)[0], offset + 8, 20
    else:
      return frozenset()
    count = min(count, (len(data) - entries) // entry_size)
    return frozenset(struct.unpack_from(order + "H", data, entries + i * entry_size)[0] for i in range(count))
  except (TypeError, struct.error):  # not a byte buffer, or a directory offset past the end
    return frozenset()


def looks_georeferenced(data: bytes) -> bool:
  """Does the TIFF's first image directory hold a GeoTIFF tag?

  Read from the directory itself: a search for the tags' bytes anywhere in
  the file matched compressed pixel data of nearly every plain TIFF, which
  cost a rasterio open and, without the geo extra, a warning about a CRS the
  file never had.
  """
  return not _GEOTIFF_TAGS.isdisjoint(_first_directory_tags(data))


_WARNED: list[bool] = []


def read_georeferenced(data: bytes, check_size: Callable[[int, int], object]) -> Optional[GeoImage]:
  """All bands and the georeference of a GeoTIFF, or None when it has none (or the geo extra is missing).

  ``check_size(width, height)`` runs on the header, before any pixel is read.
  Errors of a file that GDAL cannot read are left to the plain TIFF path,
  which words them for people.
  """
  if not available():
    if not _WARNED:
      _WARNED.append(True)
      _LOG.warning("a GeoTIFF was read without its CRS: the geo extra is not installed (%s)", GEO_EXTRA)
    return None
  import rasterio
  from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
  from rasterio.io import MemoryFile

  with warnings.catch_warnings():
    warnings.simplefilter("ignore", NotGeoreferencedWarning)
    try:
      with MemoryFile(data) as memory, memory.open() as dataset:
        georef = georef_of(dataset)
        if georef is None:
          return None
        check_size(dataset.width, dataset.height)
        pixels, bands = band_colours(dataset, np.moveaxis(dataset.read(), 0, -1))
    except (RasterioIOError, rasterio.errors.RasterioError):
      return None
  return GeoImage(pixels=np.ascontiguousarray(pixels), bands=bands, georef=georef)


def georef_of(dataset: Any) -> Optional[Georef]:
  """A rasterio dataset's CRS and geotransform, or None when it has neither (a plain TIFF)."""
  a, b, c, d, e, f = (float(v) for v in tuple(dataset.transform)[:6])
  transform = (a, b, c, d, e, f)
  crs = dataset.crs
  if crs is None and transform == _IDENTITY:
    return None
  return Georef(crs=crs.to_wkt() if crs else None, transform=transform, epsg=crs.to_epsg() if crs else None)


def band_colours(dataset: Any, pixels: np.ndarray) -> Tuple[np.ndarray, Tuple[str, ...]]:
  """(pixels, band colour names) of [H, W, K] read from ``dataset``: a paletted scene becomes its colours.

  As Pillow gives a palette PNG; a window of the scene maps the same way, pixel by pixel.
  """
  bands = tuple(interp.name for interp in dataset.colorinterp)
  if bands == ("palette",):
    return _apply_colour_table(pixels[:, :, 0], dataset.colormap(1)), ("red", "green", "blue")
  return pixels, bands


def _apply_colour_table(indices: np.ndarray, colour_table: dict) -> np.ndarray:
  """[H, W] palette indices of a paletted GeoTIFF as [H, W, 3] RGB (entries the table lacks are black)."""
  lookup = np.zeros((max(256, int(indices.max()) + 1), 3), np.uint8)
  for index, colour in colour_table.items():
    lookup[int(index)] = colour[:3]
  return lookup[indices]


@functools.lru_cache(maxsize=64)
def _crs_from_wkt(wkt: str) -> Any:
  from pyproj import CRS

  return CRS.from_wkt(wkt)


def crs_of(georef: Georef) -> Any:
  """The pyproj CRS of a georeference that has one (parsed once per distinct WKT)."""
  return _crs_from_wkt(georef.crs)


def _row_areas_geodesic(georef: Georef, height: int) -> np.ndarray:
  """Geodesic area (m²) of one pixel in each row of a geographic grid, on the CRS's ellipsoid.

  Each row's pixel at column 0 is measured: for a north-up grid (no rotation
  terms) every pixel of a row has the same area, so this is exact; for a
  rotated grid it is the row's first pixel, a close approximation.
  """
  crs = crs_of(georef)
  geod = crs.get_geod()
  a, b, c, d, e, f = georef.transform
  areas = np.empty(height, np.float64)
  for row in range(height):
    corners = ((0, row), (1, row), (1, row + 1), (0, row + 1))
    # GDAL's geotransform is in traditional GIS order whatever the CRS's axis order: x is longitude.
    lons = [a * col + b * r + c for col, r in corners]
    lats = [d * col + e * r + f for col, r in corners]
    area, _ = geod.polygon_area_perimeter(lons, lats)
    areas[row] = abs(area)
  return areas


def linear_unit_to_metres(georef: Georef) -> float:
  """Metres per unit of a projected CRS's first axis (1.0 for metres, 0.3048 for feet)."""
  return float(crs_of(georef).axis_info[0].unit_conversion_factor)


def is_geographic(georef: Georef) -> bool:
  return georef.crs is not None and crs_of(georef).is_geographic


def class_areas(
  georef: Optional[Georef], class_ids: np.ndarray, class_pixels: np.ndarray
) -> Optional[Tuple[np.ndarray, str]]:
  """(per-class areas in m², method) for an image with a CRS, or None without one.

  ``class_ids`` is the full-size mask and ``class_pixels`` its per-class
  counts; a geographic CRS needs the mask's per-row counts, a projected one
  only the counts.
  """
  if georef is None or georef.crs is None:
    return None
  counts = np.asarray(class_pixels, np.float64)
  if is_geographic(georef):
    row_areas = _row_areas_geodesic(georef, class_ids.shape[0])
    # One pass per class present: [H] counts per row, weighted by the row's pixel area.
    areas = np.zeros(len(counts), np.float64)
    for class_id in np.flatnonzero(counts):
      areas[class_id] = np.count_nonzero(class_ids == class_id, axis=1) @ row_areas
    return areas, AREA_GEODESIC
  a, b, _, d, e, _ = georef.transform
  factor = linear_unit_to_metres(georef)
  return counts * abs(a * e - b * d) * factor * factor, AREA_PROJECTED
