"""What the GIS outputs cost per mask: ``python -m bench.geo [--size 2048]`` (needs the geo extra).

Times, best of ``--repeat``, on one land-cover mask from the training
generator (``model.make_dataset``): the palette PNG against the
Cloud-Optimized GeoTIFF, projected and geodesic areas, and ``--polygons``
(tracing, areas, GeoJSON or GeoParquet encoding) with and without ``--simplify``. These are
the per-image costs the write stage adds to inference; docs/GEO.md quotes them.
"""

import argparse
import time

import numpy as np
from pyproj import CRS

from model.data.make_dataset import generate_example
from transforms.imaging import geo, mask_files, polygons
from transforms.imaging.geo import north_up

CLASSES = [
  {"id": i, "name": name, "color": [40 * i, 120, 60]}
  for i, name in enumerate(("water", "vegetation", "bare_ground", "building", "road"))
]


def _best_ms(function, repeat):
  best = float("inf")
  for _ in range(repeat):
    start = time.perf_counter()
    function()
    best = min(best, time.perf_counter() - start)
  return best * 1000.0


def measure(size: int = 2048, repeat: int = 3):
  """[(what, milliseconds)] for one size x size mask."""
  _, labels = generate_example(np.random.default_rng(1), size=size)
  labels = labels.astype(np.uint8)
  counts = np.bincount(labels.ravel(), minlength=len(CLASSES))
  utm = geo.Georef(CRS.from_epsg(32633).to_wkt(), tuple(north_up(500_000, 6_650_000, 0.5, 0.5))[:6], 32633)
  wgs84 = geo.Georef(CRS.from_epsg(4326).to_wkt(), tuple(north_up(10.0, 60.0, 1e-5, 1e-5))[:6], 4326)
  palette = mask_files.palette_bytes(CLASSES)
  exact, simple = polygons.PolygonSettings(True), polygons.PolygonSettings(True, 0.0, 1.0)

  def traced(georef, settings):
    return polygons.encode_image_polygons("k", labels, CLASSES, georef, settings)

  cases = [
    ("mask as palette PNG", lambda: mask_files.encode_mask(labels, palette, {}, 6)),
    ("mask as Cloud-Optimized GeoTIFF", lambda: mask_files.encode_geotiff(labels, utm, CLASSES, {}, 6)),
    ("areas, projected CRS", lambda: geo.class_areas(utm, labels, counts)),
    ("areas, geographic CRS (geodesic per row)", lambda: geo.class_areas(wgs84, labels, counts)),
    ("--polygons, projected", lambda: traced(utm, exact)),
    ("--polygons, geographic", lambda: traced(wgs84, exact)),
    ("--polygons --simplify 1, projected", lambda: traced(utm, simple)),
    ("--polygons --polygon_format geoparquet, projected", lambda: traced(utm, exact._replace(format="geoparquet"))),
  ]
  return [(what, _best_ms(function, repeat)) for what, function in cases]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", type=int, default=2048, help="mask side in pixels (default 2048)")
  parser.add_argument("--repeat", type=int, default=3, help="best of this many runs (default 3)")
  args = parser.parse_args(argv)
  print(f"| per {args.size}x{args.size} mask | ms |\n|---|---|")
  for what, ms in measure(args.size, args.repeat):
    print(f"| {what} | {ms:.0f} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
