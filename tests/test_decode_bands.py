"""Decoding to the model card's input spec: bands, bit depth, TIFF layouts, the display rule."""

import io

import numpy as np
import pytest
import tifffile
from PIL import Image, TiffImagePlugin
from pipeline_helpers import encode, scene, write_mode_images

from transforms.imaging.bands import DecodeError, NativeImage, conform, to_rgb
from transforms.imaging.display import display_stretch, to_display
from transforms.imaging.image_decoder import decode_image, decode_native
from transforms.imaging.input_spec import DEFAULT_SPEC, InputSpec

MAX = 10_000_000
GREY8 = InputSpec(channels=1, dtype="uint8")
GREY16 = InputSpec(channels=1, dtype="uint16")
RGB16 = InputSpec(channels=3, dtype="uint16")
BANDS4 = InputSpec(channels=4, dtype="uint16")


def _tiff(array, **kwargs):
  buffer = io.BytesIO()
  tifffile.imwrite(buffer, array, **kwargs)
  return buffer.getvalue()


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _bands(height, width, count, seed=0, dtype=np.uint16):
  return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, (height, width, count)).astype(dtype)


def test_spec_from_card_defaults_and_checks():
  assert InputSpec.from_card({}) == DEFAULT_SPEC
  assert InputSpec.from_card({"input": {"normalization": {"scale": 1, "offset": 0}}}) == DEFAULT_SPEC
  spec = InputSpec.from_card({"input": {"dtype": "uint16", "channels": 4, "color": "bands"}})
  assert (spec.channels, spec.dtype, spec.color, spec.max_value) == (4, "uint16", "bands", 65535)
  for bad, fragment in [
    ({"dtype": "float32"}, "input.dtype 'float32'"),
    ({"channels": 0}, "input.channels 0"),
    ({"channels": 65}, "from 1 to 64"),
    ({"channels": "3"}, "input.channels '3'"),
    ({"channels": True}, "input.channels True"),
  ]:
    with pytest.raises(ValueError, match=fragment):
      InputSpec.from_card({"input": bad})


def test_equal_band_counts_are_kept_at_native_depth():
  four = _bands(6, 7, 4)
  pixels, _ = decode_image(_tiff(four, photometric="minisblack", planarconfig="contig"), MAX, BANDS4)
  np.testing.assert_array_equal(pixels, four)
  narrow = np.arange(42, dtype=np.uint16).reshape(6, 7) * 97  # 0..3977: kept, not squeezed by 1/257
  pixels, _ = decode_image(_png(narrow), MAX, GREY16)
  assert pixels.dtype == np.uint16 and pixels.shape == (6, 7, 1)
  np.testing.assert_array_equal(pixels[:, :, 0], narrow)


def test_planar_and_contiguous_tiffs_give_the_same_bands():
  four = _bands(5, 9, 4, seed=1)
  contiguous = decode_native(_tiff(four, photometric="minisblack", planarconfig="contig"), MAX)
  planar = decode_native(_tiff(np.moveaxis(four, -1, 0), photometric="minisblack", planarconfig="separate"), MAX)
  for native in (contiguous, planar):
    assert native.kind == "bands"
    np.testing.assert_array_equal(native.pixels, four)
  rgb16 = _bands(5, 9, 3, seed=2)
  native = decode_native(_tiff(np.moveaxis(rgb16, -1, 0), photometric="rgb", planarconfig="separate"), MAX)
  assert native.kind == "RGB"
  np.testing.assert_array_equal(native.pixels, rgb16)


def test_eight_bit_data_for_a_sixteen_bit_model_is_scaled_by_257():
  values = np.array([[[0], [1], [128], [255]]], dtype=np.uint8)
  pixels = conform(NativeImage(values, "grey"), GREY16)
  assert pixels.dtype == np.uint16 and pixels[0, :, 0].tolist() == [0, 257, 32896, 65535]


def test_sixteen_bit_data_for_an_eight_bit_model_uses_the_1_257_rule():
  values = np.array([[[0, 0, 0, 0], [257, 128, 65535, 300]]], dtype=np.uint16)
  pixels = conform(NativeImage(values, "bands"), InputSpec(channels=4, dtype="uint8"))
  assert pixels.dtype == np.uint8 and pixels[0, 1].tolist() == [1, 0, 255, 1]


def test_rgb_and_rgba_to_one_band_is_pillow_luma():
  rgb = scene(20, 30, seed=3)
  expected = np.asarray(Image.fromarray(rgb).convert("L"))
  np.testing.assert_array_equal(conform(NativeImage(rgb, "RGB"), GREY8)[:, :, 0], expected)
  rgba = np.dstack([rgb, np.zeros((20, 30), np.uint8)])  # a transparent alpha is ignored
  np.testing.assert_array_equal(conform(NativeImage(rgba, "RGBA"), GREY8)[:, :, 0], expected)
  wide = _bands(20, 30, 3, seed=11)  # 16-bit: the same ITU-R 601-2 weights at 16-bit precision
  luma = conform(NativeImage(wide, "RGB"), GREY16)[:, :, 0]
  assert luma.dtype == np.uint16
  assert np.abs(luma - wide.astype(np.float64) @ [0.299, 0.587, 0.114]).max() <= 1


def test_grey_alpha_to_one_band_keeps_the_grey():
  rgb = scene(10, 12, seed=4)
  pixels, _ = decode_image(_png(np.asarray(Image.fromarray(rgb).convert("LA"))), MAX, GREY8)
  np.testing.assert_array_equal(pixels[:, :, 0], np.asarray(Image.fromarray(rgb).convert("L")))


def test_three_band_model_replicates_grey_and_drops_alpha():
  grey = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
  pixels, _ = decode_image(_png(grey), MAX, RGB16)
  assert pixels.shape == (3, 4, 3) and pixels.dtype == np.uint16
  for band in range(3):
    np.testing.assert_array_equal(pixels[:, :, band], grey)
  rgba = np.dstack([scene(8, 9, seed=5), np.full((8, 9), 7, np.uint8)])
  pixels, _ = decode_image(_png(rgba), MAX, RGB16)
  np.testing.assert_array_equal(pixels, rgba[:, :, :3].astype(np.uint16) * 257)


@pytest.mark.parametrize(
  "data,spec,message",
  [
    (
      _png(scene(8, 8)),
      BANDS4,
      "image has 3 bands (RGB) but the model takes 4 (card.json input.channels); give it 4-band images or use a "
      "model trained on 3",
    ),
    (
      _tiff(_bands(8, 8, 5, dtype=np.uint8), photometric="minisblack", planarconfig="contig"),
      DEFAULT_SPEC,
      "image has 5 bands but the model takes 3 (card.json input.channels); give it 3-band images or use a model "
      "trained on 5",
    ),
    (_png(np.zeros((4, 4), np.uint8)), BANDS4, "image has 1 band (grey) but the model takes 4"),
    (
      _tiff(_bands(8, 8, 4), photometric="minisblack", planarconfig="contig"),
      GREY16,
      "image has 4 bands but the model takes 1",
    ),
  ],
)
def test_band_counts_that_need_a_guess_fail(data, spec, message):
  with pytest.raises(DecodeError) as error:
    decode_image(data, MAX, spec)
  assert str(error.value).startswith(message)


def test_sixteen_bit_colour_png_keeps_its_depth():
  import tensorflow as tf

  rgb16 = _bands(6, 5, 3, seed=6)
  pixels, _ = decode_image(tf.io.encode_png(rgb16).numpy(), MAX, RGB16)
  np.testing.assert_array_equal(pixels, rgb16)  # Pillow alone would give 8 bits


def test_header_checks_orientation_and_geotiff_scale_hold_for_other_specs(tmp_path):
  big = _tiff(np.zeros((4, 1000, 1000), np.uint16), photometric="minisblack", planarconfig="separate")
  with pytest.raises(DecodeError, match="more than --max_image_pixels=1000"):
    decode_image(big, 1000, BANDS4)
  with pytest.raises(DecodeError, match="image data is corrupt or truncated|image header is corrupt"):
    decode_image(_png(scene(50, 50))[:200], MAX, GREY8)
  with pytest.raises(DecodeError, match="file is empty"):
    decode_image(b"", MAX, BANDS4)
  write_mode_images(str(tmp_path))
  with open(tmp_path / "modes/exif_rotated.jpg", "rb") as f:
    pixels, _ = decode_image(f.read(), MAX, GREY8)
  assert pixels.shape == (100, 40, 1)
  with open(tmp_path / "modes/geo.tif", "rb") as f:
    assert decode_image(f.read(), MAX, GREY16)[1] == (0.5, 0.5)
  four = _bands(3, 5, 4, seed=7)
  rotated = decode_native(
    _tiff(
      four,
      photometric="minisblack",
      planarconfig="contig",
      extratags=[(274, "H", 1, 6, False), (33550, "d", 3, (2.0, 3.0, 0.0), False)],
    ),
    MAX,
  )
  np.testing.assert_array_equal(rotated.pixels, np.rot90(four, -1))  # orientation 6: rotate 90 clockwise
  assert rotated.pixel_size == (3.0, 2.0)


def test_tiff_orientation_matches_pillow():
  grey = scene(6, 9, seed=8)[:, :, 0]
  for orientation in range(1, 9):
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[274] = orientation
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="TIFF", tiffinfo=ifd)
    pillow, _ = decode_image(buffer.getvalue(), MAX)  # the default path: Pillow's exif_transpose
    ours = decode_native(buffer.getvalue(), MAX)  # tifffile and the numpy orientation table
    np.testing.assert_array_equal(ours.pixels[:, :, 0], pillow[:, :, 0], err_msg=f"orientation {orientation}")


def test_default_spec_decodes_exactly_as_before():
  rgb = scene(30, 40, seed=9)
  data = encode(rgb)
  pixels, _ = decode_image(data, MAX)
  assert decode_image(data, MAX, InputSpec(3, "uint8", "RGB"))[0] is not None
  np.testing.assert_array_equal(pixels, rgb)
  grey16 = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
  pixels, _ = decode_image(_png(grey16), MAX)
  np.testing.assert_array_equal(pixels[:, :, 0], ((grey16.astype(np.uint32) + 128) // 257).astype(np.uint8))


def test_display_rule():
  rgb = scene(10, 10, seed=10)
  assert to_display(rgb) is rgb and display_stretch(rgb) is None  # the default path costs nothing
  grey = rgb[:, :, :1]
  np.testing.assert_array_equal(to_display(grey), np.repeat(grey, 3, axis=2))
  four = np.dstack([rgb, np.full((10, 10), 200, np.uint8)])
  np.testing.assert_array_equal(to_display(four), rgb)
  ramp = np.repeat(np.arange(100, dtype=np.uint16)[None, :, None] * 40, 4, axis=2).repeat(3, axis=0)
  stretch = display_stretch(ramp)
  assert stretch.shape == (3, 2)
  shown = to_display(ramp, stretch)
  assert shown.dtype == np.uint8 and shown.min() == 0 and shown.max() == 255
  # Tiles drawn with the image's stretch join seamlessly: halves equal the whole.
  np.testing.assert_array_equal(
    np.hstack([to_display(ramp[:, :50], stretch), to_display(ramp[:, 50:], stretch)]), shown
  )
  flat = np.full((4, 4, 1), 1234, np.uint16)
  assert to_display(flat).max() == 0


def test_high_bit_depth_rules():
  sixteen = Image.fromarray(np.array([[0, 257, 65535]], dtype=np.uint16))
  assert to_rgb(sixteen)[0, :, 0].tolist() == [0, 1, 255]
  small_int = Image.fromarray(np.array([[0, 7, 255]], dtype=np.int32))
  assert to_rgb(small_int)[0, :, 0].tolist() == [0, 7, 255]
  unit_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
  assert to_rgb(unit_float)[0, :, 0].tolist() == [0, 128, 255]
  wide_float = Image.fromarray(np.array([[-10.0, 0.0, 10.0, np.nan]], dtype=np.float32))
  assert to_rgb(wide_float)[0, :, 0].tolist() == [0, 128, 255, 128]
