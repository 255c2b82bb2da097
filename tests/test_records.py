"""Tests of transforms/imaging/records.py: the pipeline's records, and credentials redacted from failures."""

import pickle

import numpy as np
import pytest

from transforms.imaging.records import DecodedImage, Failure, ImageHeader, ImageMask, Tile, TileResult, redact


def test_failure_records_never_carry_credentials():
  failure = Failure(
    "gs://user:secret@bucket/a.png?X-Goog-Signature=abc123&x=1",
    "a.png",
    "read",
    "OSError",
    "403 for https://h/o?access_token=ya29.tok and header Bearer ya29.xyz",
  )
  text = str(failure.to_dict())
  for secret in ("secret", "abc123", "ya29"):
    assert secret not in text
  assert redact("gs://bucket/plain/path.png") == "gs://bucket/plain/path.png"


HEADER = ImageHeader("gs://b/a.png", "a", 3, 4, pixel_size=(0.5, 0.5))
PIXELS = np.zeros((3, 4, 3), np.uint8)
ELEMENTS = [
  DecodedImage(HEADER, PIXELS),
  Tile(HEADER, 0, 1, 0, 0, 0, 3, 0, 4, PIXELS),
  TileResult(HEADER, 0, 1, 0, 0, np.zeros(1, np.uint8), np.zeros(1), np.zeros(1)),
  ImageMask(HEADER, np.zeros((3, 4), np.uint8), np.zeros(1), np.zeros(1)),
]


@pytest.mark.parametrize("element", ELEMENTS, ids=lambda element: type(element).__name__)
def test_elements_read_their_header_and_stay_plain_tuples(element):
  """The header's facts read through; pickling (Beam's fallback coder) and _replace keep the element's type."""
  assert (element.uri, element.key, element.pixel_size) == ("gs://b/a.png", "a", (0.5, 0.5))
  assert (element.display, element.ood, element.georef) == (None, None, None)
  assert not hasattr(element, "__dict__")
  copy = pickle.loads(pickle.dumps(element))
  assert type(copy) is type(element) and copy.header == HEADER
  assert type(element._replace(header=HEADER._replace(key="b"))) is type(element)
  whole_image = isinstance(element, (DecodedImage, ImageMask))
  assert hasattr(element, "height") == hasattr(element, "width") == whole_image
  if whole_image:
    assert (element.height, element.width) == (3, 4)
