"""Tests of transforms/imaging/image_decoder.py: every promised mode and format decodes, bad inputs fail readably,
and the TensorFlow PNG fast path decodes to exactly Pillow's array and steps aside for anything unusual."""

import io
import struct

import numpy as np
import pytest
import tensorflow as tf  # noqa: F401  (the fast path is used only when TensorFlow is loaded)
from PIL import Image, PngImagePlugin
from pipeline_helpers import encode, scene, write_mode_images

from transforms.imaging.bands import DecodeError
from transforms.imaging.image_decoder import _png_fast_path, decode_image

MAX = 10_000_000


def _decode_file(path):
  with open(path, "rb") as f:
    return decode_image(f.read(), MAX)


def test_every_mode_decodes_to_rgb_uint8(tmp_path):
  made = write_mode_images(str(tmp_path))
  for name, size in made.items():
    pixels, _ = _decode_file(tmp_path / name)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3, name
    assert (pixels.shape[1], pixels.shape[0]) == size, name


def test_exif_orientation_is_applied(tmp_path):
  write_mode_images(str(tmp_path))
  pixels, _ = _decode_file(tmp_path / "modes/exif_rotated.jpg")
  assert pixels.shape[:2] == (100, 40)  # stored 100 wide x 40 high, displayed rotated


def test_geotiff_pixel_scale_is_read(tmp_path):
  write_mode_images(str(tmp_path))
  _, pixel_size = _decode_file(tmp_path / "modes/geo.tif")
  assert pixel_size == (0.5, 0.5)


def test_gif_uses_first_frame(tmp_path):
  write_mode_images(str(tmp_path))
  pixels, _ = _decode_file(tmp_path / "modes/animated.gif")
  assert pixels.std() > 10  # the second frame is a flat colour


@pytest.mark.parametrize(
  "data,reason",
  [
    (b"", "empty"),
    (b"this is text, not an image", "not a recognised image format"),
    (encode(scene(50, 50), "PNG")[:200], "corrupt or truncated"),
    (encode(scene(50, 50), "JPEG")[:300], "corrupt or truncated"),
  ],
)
def test_bad_inputs_raise_readable_errors(data, reason):
  with pytest.raises(DecodeError, match=reason):
    decode_image(data, MAX)


def test_decompression_bomb_is_refused_from_the_header():
  header = Image.new("L", (1, 1))
  buffer = io.BytesIO()
  header.save(buffer, format="PNG")
  data = bytearray(buffer.getvalue())
  data[16:24] = struct.pack(">II", 100_000, 100_000)  # declared size in IHDR (CRC now wrong, never read)
  with pytest.raises(DecodeError, match="max_image_pixels|not a recognised|corrupt"):
    decode_image(bytes(data), MAX)
  with pytest.raises(DecodeError, match="max_image_pixels"):
    decode_image(encode(scene(100, 100)), 5_000)


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
