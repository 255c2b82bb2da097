"""Split large labelled scenes by region into train/val/test, so no test pixel is seen in training.

    python -m model.make_splits --scenes data/nuclei_scene --regions 4x4 --val 0.125 --test 0.25 --seed 0 --out data/nuclei
    python -m model.make_splits --image slide.tif --mask slide_mask.png [--image ... --mask ...] --classes background,tumour --regions 3x3 --out data/slides

Users often label one large scene (a slide, an orthophoto) rather than many
images. Random crops of one scene for both training and testing would test on
pixels the model trained on, so each scene is cut into a grid of --regions
RxC blocks and whole blocks are assigned to splits (at least one per split
asked for, the rest to train; deterministic for a --seed). Every block is
written as its own image, at the scene's bit depth and bands (TIFF for 16-bit
or multi-band scenes, PNG otherwise), with a palette mask PNG, into
OUT/<split>/images|masks/<scene>_r<row>_c<col>.<ext>. OUT/classes.json is the
scenes' class list and OUT/splits.json records which block went where, with
its pixel box, so an evaluation on held-out pixels can be audited.
"""

import sys

from model.data.make_splits import main

if __name__ == "__main__":
  sys.exit(main())
