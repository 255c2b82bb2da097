"""The TensorFlow PNG fast path decodes to exactly Pillow's array, and steps aside for anything unusual."""

import io

import numpy as np
import pytest
import tensorflow as tf  # noqa: F401  (the fast path is used only when TensorFlow is loaded)
from PIL import Image, PngImagePlugin
from pipeline_helpers import encode, scene

from transforms.imaging.image_decoder import _png_fast_path, decode_image


def _pillow(data):
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _gamma_png(pixels):
  info = PngImagePlugin.PngInfo()
  info.add(b"gAMA", (45455).to_bytes(4, "big"))
  return encode(pixels, pnginfo=info)


PIXELS = scene(37, 53, seed=3)


@pytest.mark.parametrize(
  "data", [encode(PIXELS), encode(PIXELS, compress_level=0), _gamma_png(PIXELS)], ids=["plain", "stored", "gamma"]
)
def test_plain_rgb_png_takes_the_fast_path_with_identical_pixels(data):
  assert _png_fast_path(Image.open(io.BytesIO(data)), data) is not None
  pixels, _ = decode_image(data, 10**6)
  assert np.array_equal(pixels, _pillow(data))


def _exif_rotated():
  exif = Image.Exif()
  exif[0x0112] = 6
  return encode(PIXELS, exif=exif.tobytes())


@pytest.mark.parametrize(
  "data",
  [encode(PIXELS, transparency=(0, 0, 0)), _exif_rotated(), encode(PIXELS[:, :, 0])],
  ids=["transparency", "exif", "grey"],
)
def test_unusual_pngs_are_left_to_pillow(data):
  assert _png_fast_path(Image.open(io.BytesIO(data)), data) is None


def test_exif_orientation_still_applied_to_pngs():
  pixels, _ = decode_image(_exif_rotated(), 10**6)
  assert pixels.shape[:2] == (PIXELS.shape[1], PIXELS.shape[0])


def test_truncated_png_still_fails_with_pillows_message():
  data = encode(PIXELS)
  with pytest.raises(ValueError, match="corrupt or truncated"):
    decode_image(data[: len(data) // 2], 10**6)
