"""Generate the texture-mosaic land-cover dataset.

Real public-domain texture photographs shipped inside scikit-image (brick,
grass, gravel) plus synthesized water and asphalt are cut into random aerial
layouts -- irregular blobs, thick polyline roads, blocky buildings -- so the
ground truth is exact and the task still needs texture, not colour, to solve.
Every image is a pure function of (seed, split, index).

    python -m model.make_dataset --out data/mosaic --seed 1 --train 1200 --val 100 --test 0 --size 128
"""

from model.data.make_dataset import main

if __name__ == "__main__":
  main()
