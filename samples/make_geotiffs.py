"""Regenerate the bundled GeoTIFF samples: ``python -m samples.make_geotiffs`` (needs the geo extra).

Two land-cover scenes from the default model's mosaic generator, placed on
the ground the way survey data arrives:

* ``samples/geo/utm33n_field.tif``: 640×512 RGB, WGS 84 / UTM zone 33N
  (EPSG:32633), 0.5 m pixels, a tiled DEFLATE GeoTIFF (areas in m², projected);
* ``samples/geo/wgs84_60n.tif``: 400×400 RGB, WGS 84 longitude/latitude
  (EPSG:4326) near 60° N, 0.00001° pixels (areas geodesic: a pixel is about
  0.56 m east-west and 1.11 m north-south there).

The ground-truth class ids are written beside them in ``samples/geo/truth/``
as GeoTIFFs with the same georeference.
"""

import argparse
import os

import numpy as np
import rasterio

from model.data.make_dataset import generate_example
from transforms.imaging.geo import north_up

SEED = 20261127
HERE = os.path.dirname(os.path.abspath(__file__))
# name, height, width, CRS, geotransform
SCENES = [
  ("utm33n_field.tif", 512, 640, "EPSG:32633", north_up(500_000.0, 6_650_000.0, 0.5, 0.5)),
  ("wgs84_60n.tif", 400, 400, "EPSG:4326", north_up(10.75, 60.0, 0.00001, 0.00001)),
]


def _write(path, bands, crs, transform, **profile):
  count, height, width = bands.shape
  with rasterio.open(
    path,
    "w",
    driver="GTiff",
    width=width,
    height=height,
    count=count,
    dtype=bands.dtype.name,
    crs=crs,
    transform=transform,
    tiled=True,
    blockxsize=256,
    blockysize=256,
    compress="deflate",
    **profile,
  ) as dataset:
    dataset.write(bands)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=os.path.join(HERE, "geo"), help="folder to write the GeoTIFFs into")
  args = parser.parse_args(argv)
  os.makedirs(os.path.join(args.out, "truth"), exist_ok=True)
  for index, (name, height, width, crs, transform) in enumerate(SCENES):
    image, labels = generate_example(np.random.default_rng([SEED, index]), size=max(height, width))
    image, labels = image[:height, :width], labels[:height, :width]
    _write(os.path.join(args.out, name), np.moveaxis(image, -1, 0), crs, transform, photometric="RGB")
    _write(os.path.join(args.out, "truth", name), labels[None], crs, transform)


if __name__ == "__main__":
  main()
