"""``--polygons``: one GeoJSON feature per connected region of a class, in the image's CRS.

The regions come from the stitched, full-size mask (rasterio.features.shapes,
4-connected, the pixel edges as polygon edges), never from single tiles, so a
region that crosses a tile seam is one polygon with no seam line in it.
Coordinates are the image's CRS through its geotransform; an image without a
georeference gets pixel coordinates (x = column, y = row, from the top-left
corner), and the file says so in its ``coordinates`` member.

Each feature carries ``class_id``, ``class_name`` and ``area``: the exact area
of the region's pixels, in m² for an image with a CRS (geodesic on the CRS's
ellipsoid for a geographic one), in ``--pixel_unit``² with ``--pixel_size``,
else in pixels. ``--min_polygon_area`` drops regions smaller than that (same
unit); ``--simplify`` simplifies the edges with a tolerance in CRS units
(pixels without a georeference) as one coverage (shapely's
``coverage_simplify``), so neighbouring regions keep sharing their edges
rather than opening gaps. Needs the geo extra (``transforms.geo``).
"""

import json
from typing import NamedTuple, Optional

import numpy as np

from transforms import geo
from transforms.records import POLYGONS_DIR

# GeoJSON (RFC 7946) drops the "crs" member, but GDAL, QGIS and geopandas read its 2008 form, and a
# polygon file in UTM metres must say so. Longitude/latitude WGS 84 is written as OGC CRS84 (x = lon).
_CRS84 = "urn:ogc:def:crs:OGC:1.3:CRS84"


class PolygonSettings(NamedTuple):
  """``--polygons`` and its knobs; ``enabled`` False writes none."""

  enabled: bool = False
  min_area: float = 0.0
  simplify: float = 0.0


def polygons_relpath(key: str) -> str:
  return f"{POLYGONS_DIR}/{key}.geojson"


def _area_function(georef: Optional[geo.Georef], flag_pixel_size: Optional[float], pixel_unit: str):
  """(area of a shapely geometry, unit) in the image's terms (module docstring)."""
  if georef is not None and georef.crs is not None:
    if geo.is_geographic(georef):
      geod = geo.crs_of(georef).get_geod()
      return (lambda shape: abs(geod.geometry_area_perimeter(shape)[0])), "m^2"
    factor = geo.linear_unit_to_metres(georef) ** 2
    return (lambda shape: shape.area * factor), "m^2"
  if georef is not None:
    return (lambda shape: shape.area), f"{pixel_unit}^2"
  if flag_pixel_size:
    scale = float(flag_pixel_size) ** 2
    return (lambda shape: shape.area * scale), f"{pixel_unit}^2"
  return (lambda shape: shape.area), "pixel"


def _crs_members(georef: Optional[geo.Georef]) -> dict:
  if georef is None:
    return {"coordinates": "pixel: x = column, y = row from the image's top-left corner (not georeferenced)"}
  if georef.crs is None:
    return {"coordinates": "the image's geotransform, without a CRS"}
  name = _CRS84 if georef.epsg == 4326 else f"urn:ogc:def:crs:EPSG::{georef.epsg}" if georef.epsg else None
  members = {"coordinates": georef.crs_label if georef.epsg else "crs_wkt"}
  if name:
    members["crs"] = {"type": "name", "properties": {"name": name}}
  else:
    members["crs_wkt"] = georef.crs
  return members


def polygon_collection(
  key: str,
  class_ids: np.ndarray,
  classes,
  georef: Optional[geo.Georef],
  settings: PolygonSettings,
  flag_pixel_size: Optional[float] = None,
  pixel_unit: str = "m",
) -> dict:
  """The GeoJSON FeatureCollection of one mask (JSON-ready dict)."""
  import rasterio.features
  import shapely
  from affine import Affine
  from shapely.geometry import mapping, shape

  transform = georef.affine() if georef is not None else Affine.identity()
  names = {int(entry["id"]): entry["name"] for entry in classes}
  area_of, unit = _area_function(georef, flag_pixel_size, pixel_unit)
  regions, areas, ids = [], [], []
  for geometry, value in rasterio.features.shapes(class_ids, connectivity=4, transform=transform):
    region = shape(geometry)
    area = area_of(region)
    if area < settings.min_area:
      continue
    regions.append(region)
    areas.append(area)
    ids.append(int(value))
  if settings.simplify > 0 and regions:
    regions = list(shapely.coverage_simplify(np.array(regions, dtype=object), settings.simplify))
  features = [
    {
      "type": "Feature",
      "id": index,
      "geometry": mapping(region),
      "properties": {"class_id": class_id, "class_name": names.get(class_id, str(class_id)), "area": area},
    }
    for index, (region, class_id, area) in enumerate(zip(regions, ids, areas))
  ]
  return {
    "type": "FeatureCollection",
    "name": key,
    **_crs_members(georef),
    "area_unit": unit,
    "features": features,
  }


def encode_polygons(collection: dict) -> bytes:
  return json.dumps(collection, separators=(",", ":")).encode("utf-8")
