"""model.data.image_io on real encoded files: native depth and bands in, colour masks and unsupported types out."""

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from model.data.image_io import ImageFormatError, MaskFormatError, image_info, read_image, read_mask


def encode(image, format_name="PNG", **options):
  buffer = io.BytesIO()
  image.save(buffer, format_name, **options)
  return buffer.getvalue()


def tiff_bytes(array, **options):
  buffer = io.BytesIO()
  tifffile.imwrite(buffer, array, **options)
  return buffer.getvalue()


RGB = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)


@pytest.mark.parametrize(
  "data, expected",
  [
    (encode(Image.fromarray(RGB[:, :, 0])), RGB[:, :, :1]),
    (encode(Image.fromarray(RGB)), RGB),
    (encode(Image.fromarray(np.dstack([RGB, RGB[:, :, :1]]), "RGBA")), RGB),
    (encode(Image.fromarray(RGB[:, :, :2], "LA")), RGB[:, :, :1]),
    (encode(Image.fromarray(RGB[:, :, 0].astype(np.uint16) * 257)), RGB[:, :, :1].astype(np.uint16) * 257),
    (
      tiff_bytes(np.dstack([RGB, RGB]).astype(np.uint16) * 200, photometric="minisblack", planarconfig="contig"),
      np.dstack([RGB, RGB]).astype(np.uint16) * 200,
    ),
    (
      tiff_bytes(np.moveaxis(RGB, -1, 0).astype(np.uint16), photometric="minisblack", planarconfig="separate"),
      RGB.astype(np.uint16),
    ),
    (encode(Image.fromarray(RGB), "TIFF", compression="tiff_lzw"), RGB),
  ],
  ids=["L", "RGB", "RGBA", "LA", "I;16", "tiff-6band-contig", "tiff-planar", "tiff-lzw-via-pillow"],
)
def test_read_image_keeps_native_values(data, expected):
  image = read_image(data)
  assert image.dtype == expected.dtype and image.shape == expected.shape
  np.testing.assert_array_equal(image, expected)
  assert image_info(data) == expected.shape + (expected.dtype.name,)


def test_palette_image_becomes_rgb():
  palette_image = Image.fromarray(RGB).quantize(8)
  np.testing.assert_array_equal(read_image(encode(palette_image)), np.asarray(palette_image.convert("RGB")))


def test_exif_orientation_is_applied_to_jpeg():
  image = Image.fromarray(np.zeros((10, 30, 3), np.uint8))
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise to display
  data = encode(image, "JPEG", exif=exif.tobytes())
  assert read_image(data).shape == (30, 10, 3)
  assert image_info(data) == (30, 10, 3, "uint8")


@pytest.mark.parametrize(
  "data, needle",
  [
    (tiff_bytes(np.zeros((4, 4), np.float32)), "float32 image; convert it to uint8 or uint16"),
    (tiff_bytes(np.array([[1 << 20, 0]], np.int32)), "int32 values 0..1048576, beyond unsigned 16 bits"),
    (encode(Image.new("1", (4, 4))), "1-bit"),
  ],
  ids=["float", "int32", "1-bit"],
)
def test_unsupported_image_types_name_the_file(data, needle):
  with pytest.raises(ImageFormatError, match="^img.tif .*" + needle):
    read_image(data, name="img.tif")


def test_read_mask_rules():
  ids = np.array([[0, 1, 255], [2, 1, 0]], np.uint8)
  np.testing.assert_array_equal(read_mask(encode(Image.fromarray(ids))), ids)
  np.testing.assert_array_equal(read_mask(encode(Image.fromarray(ids.astype(np.uint16)))), ids)
  palette = Image.fromarray(ids, "P")
  palette.putpalette([10, 20, 30] * 256)
  np.testing.assert_array_equal(read_mask(encode(palette)), ids)
  with pytest.raises(MaskFormatError, match="^m.png holds values 0..300; class ids must be 0..254"):
    read_mask(encode(Image.fromarray(np.array([[300, 0]], np.uint16))), name="m.png")
  with pytest.raises(MaskFormatError, match="^m.png is an RGBA colour mask.*palette indices are the ids"):
    read_mask(encode(Image.fromarray(np.zeros((2, 2, 4), np.uint8))), name="m.png")
  with pytest.raises(MaskFormatError, match="^m.tif has 3 channels"):
    read_mask(tiff_bytes(np.zeros((2, 2, 3), np.uint8), photometric="rgb"), name="m.tif")


def test_sixteen_bit_colour_png_is_refused_not_truncated():
  # Pillow would silently read this 48-bit PNG as 8-bit RGB.
  import struct
  import zlib

  def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

  rows = b"".join(b"\x00" + bytes(6 * 2) for _ in range(2))
  data = (
    b"\x89PNG\r\n\x1a\n"
    + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 16, 2, 0, 0, 0))
    + chunk(b"IDAT", zlib.compress(rows))
    + chunk(b"IEND", b"")
  )
  assert Image.open(io.BytesIO(data)).mode == "RGB"
  with pytest.raises(ImageFormatError, match="^deep.png is a 16-bit colour PNG"):
    read_image(data, name="deep.png")
  with pytest.raises(MaskFormatError, match="16-bit colour PNG"):
    read_mask(data, name="deep.png")
