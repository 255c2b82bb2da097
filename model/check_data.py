"""Check a labelled dataset before training on it, and describe it.

    python -m model.check_data DIR [--classes background,nucleus] [--splits train,val,test]

Reads every image and mask once (folders or TFRecord shards, as model.data
does) and reports per split the image and mask counts, size ranges, channels
and bit depth, and pixels per class, plus per-band statistics of the train
split for input normalisation. Problems that would otherwise surface an hour
into training, or never (a colour mask read as ids, a class id the head does
not have, a mask of the wrong size), are collected over the whole dataset and
reported together, each naming its file, so one run finds them all.
Exits 0 with the report, or 1 with ``check_data: error:`` and the problems.
"""

import sys

from model.data.check_data import main

if __name__ == "__main__":
  sys.exit(main())
