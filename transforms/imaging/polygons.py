"""``--polygons``: one feature per connected region of a class, in the image's CRS.

``OUT/polygons/<key>.geojson`` by default; ``--polygon_format geoparquet``
writes ``<key>.parquet`` instead, GeoParquet 1.1 (WKB geometry, the CRS as
PROJJSON in the ``geo`` metadata) through pyarrow, which Beam already
brings, for loading straight into geopandas, DuckDB or BigQuery.

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
rather than opening gaps. Needs the geo extra (``transforms.imaging.geo``).
"""

import io
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, List, NamedTuple, Optional, Tuple

import numpy as np

from transforms.imaging import geo
from transforms.imaging.records import POLYGONS_DIR

# GeoJSON (RFC 7946) drops the "crs" member, but GDAL, QGIS and geopandas read its 2008 form, and a
# polygon file in UTM metres must say so. Longitude/latitude WGS 84 is written as OGC CRS84 (x = lon).
_CRS84 = "urn:ogc:def:crs:OGC:1.3:CRS84"


GEOJSON, GEOPARQUET = "geojson", "geoparquet"
POLYGON_FORMATS = (GEOJSON, GEOPARQUET)
EXTENSIONS = {GEOJSON: ".geojson", GEOPARQUET: ".parquet"}
MIME_TYPES = {GEOJSON: "application/geo+json", GEOPARQUET: "application/vnd.apache.parquet"}


class PolygonSettings(NamedTuple):
  """``--polygons`` and its knobs; ``enabled`` False writes none."""

  enabled: bool = False
  min_area: float = 0.0
  simplify: float = 0.0
  format: str = GEOJSON


def polygons_relpath(key: str, fmt: str = GEOJSON) -> str:
  return f"{POLYGONS_DIR}/{key}{EXTENSIONS[fmt]}"


def _area_function(
  georef: Optional[geo.Georef], flag_pixel_size: Optional[float], pixel_unit: str
) -> Tuple[Callable[[Any], float], str]:
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


def _crs_members(georef: Optional[geo.Georef]) -> dict[str, Any]:
  if georef is None:
    return {"coordinates": "pixel: x = column, y = row from the image's top-left corner (not georeferenced)"}
  if georef.crs is None:
    return {"coordinates": "the image's geotransform, without a CRS"}
  name = _CRS84 if georef.epsg == 4326 else f"urn:ogc:def:crs:EPSG::{georef.epsg}" if georef.epsg else None
  members: dict[str, Any] = {"coordinates": georef.crs_label if georef.epsg else "crs_wkt"}
  if name:
    members["crs"] = {"type": "name", "properties": {"name": name}}
  else:
    members["crs_wkt"] = georef.crs
  return members


class TracedRegions(NamedTuple):
  """One mask's regions as shapely polygons, with their class ids and areas (in ``unit``)."""

  regions: list
  class_ids: List[int]
  areas: List[float]
  unit: str


def trace_regions(
  class_ids: np.ndarray,
  georef: Optional[geo.Georef],
  settings: PolygonSettings,
  flag_pixel_size: Optional[float] = None,
  pixel_unit: str = "m",
) -> TracedRegions:
  """The 4-connected regions of a full-size mask in the image's coordinates (module docstring)."""
  import rasterio.features
  import shapely
  from affine import Affine
  from shapely.geometry import shape

  transform = georef.affine() if georef is not None else Affine.identity()
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
  return TracedRegions(regions, ids, areas, unit)


def polygon_collection(
  key: str, traced: TracedRegions, classes: Sequence[Mapping[str, Any]], georef: Optional[geo.Georef]
) -> dict[str, Any]:
  """The regions as a GeoJSON FeatureCollection (JSON-ready dict), its CRS named as the module says."""
  from shapely.geometry import mapping

  names = _class_names(classes)
  features = [
    {
      "type": "Feature",
      "id": index,
      "geometry": mapping(region),
      "properties": {"class_id": class_id, "class_name": names.get(class_id, str(class_id)), "area": area},
    }
    for index, (region, class_id, area) in enumerate(zip(traced.regions, traced.class_ids, traced.areas))
  ]
  return {
    "type": "FeatureCollection",
    "name": key,
    **_crs_members(georef),
    "area_unit": traced.unit,
    "features": features,
  }


def _class_names(classes: Sequence[Mapping[str, Any]]) -> dict[int, str]:
  return {int(entry["id"]): entry["name"] for entry in classes}


def geoparquet_table(
  key: str, traced: TracedRegions, classes: Sequence[Mapping[str, Any]], georef: Optional[geo.Georef]
) -> Any:
  """The regions as a GeoParquet 1.1 table: WKB ``geometry`` plus the GeoJSON properties, CRS as PROJJSON.

  The ``geo`` metadata is what GeoParquet readers (geopandas, GDAL, QGIS,
  DuckDB) look for; without a CRS the column's ``crs`` is null, which the
  specification reads as "undefined" (pixel coordinates, say).
  """
  import pyarrow as pa
  import shapely

  names = _class_names(classes)
  column: dict[str, Any] = {
    "encoding": "WKB",
    "geometry_types": sorted({region.geom_type for region in traced.regions}),
  }
  column["crs"] = geo.crs_of(georef).to_json_dict() if georef is not None and georef.crs is not None else None
  metadata = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
  table = pa.table(
    {
      "key": pa.array([key] * len(traced.regions), pa.string()),
      "class_id": pa.array(traced.class_ids, pa.int32()),
      "class_name": pa.array([names.get(value, str(value)) for value in traced.class_ids], pa.string()),
      "area": pa.array(traced.areas, pa.float64()),
      "geometry": pa.array(
        list(shapely.to_wkb(np.array(traced.regions, dtype=object))) if traced.regions else [], pa.binary()
      ),
    }
  )
  extra = {
    "geo": json.dumps(metadata),
    "deconvseg:area_unit": traced.unit,
    "deconvseg:coordinates": _crs_members(georef)["coordinates"],
  }
  return table.replace_schema_metadata({**(table.schema.metadata or {}), **{k: v.encode() for k, v in extra.items()}})


def encode_image_polygons(
  key: str,
  class_ids: np.ndarray,
  classes: Sequence[Mapping[str, Any]],
  georef: Optional[geo.Georef],
  settings: PolygonSettings,
  flag_pixel_size: Optional[float] = None,
  pixel_unit: str = "m",
) -> Tuple[bytes, int]:
  """(file bytes, number of polygons) of one mask in ``settings.format``; the regions are traced once."""
  traced = trace_regions(class_ids, georef, settings, flag_pixel_size, pixel_unit)
  if settings.format == GEOPARQUET:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(geoparquet_table(key, traced, classes, georef), buffer, compression="zstd")
    data = buffer.getvalue()
  else:
    data = json.dumps(polygon_collection(key, traced, classes, georef), separators=(",", ":")).encode("utf-8")
  return data, len(traced.regions)
