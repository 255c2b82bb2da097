"""Tests of transforms/imaging/mask_files.py: masks as palette PNGs packed to the bits the classes need."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from transforms.imaging.mask_files import STATS_CHUNK, encode_mask, palette_bytes


@pytest.mark.parametrize("num_classes, bits", [(2, 1), (4, 2), (5, 4), (16, 4), (17, 8), (256, 8)])
def test_masks_are_packed_to_the_bits_the_classes_need(num_classes, bits):
  classes = [{"id": i, "name": f"c{i}", "color": [i % 256, (7 * i) % 256, 255 - i % 256]} for i in range(num_classes)]
  rng = np.random.default_rng(num_classes)
  class_ids = rng.integers(0, num_classes, size=(37, 53), dtype=np.uint8)
  class_ids[:10] = num_classes - 1  # runs, and the largest id
  data = encode_mask(class_ids, palette_bytes(classes), {"key": "k"}, compress_level=6)
  assert data[24] == bits  # IHDR bit depth
  with Image.open(io.BytesIO(data)) as image:
    assert image.mode == "P"
    np.testing.assert_array_equal(np.asarray(image), class_ids)
    assert json.loads(image.info[STATS_CHUNK]) == {"key": "k"}
    assert image.getpalette()[: 3 * num_classes] == [v for c in classes for v in c["color"]]
