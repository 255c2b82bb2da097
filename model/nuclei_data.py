"""A real labelled scene: the fluorescence nuclei image shipped inside the stardist wheel.

    python -m model.nuclei_data --out data/nuclei_scene
    python -m model.make_splits --scenes data/nuclei_scene --regions 4x4 --val 0.125 --test 0.25 --seed 0 --out data/nuclei
    python -m model.check_data data/nuclei

stardist 0.9.2 (BSD-3-Clause, pinned in requirements.lock) bundles
``stardist/data/images/img2d.tif``, a 512x512 16-bit fluorescence microscopy
image, and ``mask2d.tif``, its hand-made nucleus instance labels. They are
real, offline, licensed for reuse and small, and they exercise exactly what
users bring: 16-bit single-band data with a narrow value range (0..~235), one
large labelled scene rather than many images. The package is installed
without its dependencies (it needs TensorFlow extras we do not want), so it
is never imported: the files are located through its distribution metadata.

Writes OUT/images/nuclei.tif (the image unchanged), OUT/masks/nuclei.png
(instances -> 0 background, 1 nucleus), OUT/classes.json and OUT/SOURCE.json
(where the data came from, checksums, and the conversion).
"""

import sys

from model.data.nuclei_data import main

if __name__ == "__main__":
  sys.exit(main())
