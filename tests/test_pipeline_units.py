"""Unit tests of the pipeline's pieces: decoding, keys, the TFRecord reader, the model handler."""

import io
import os
import struct

import numpy as np
import pytest
from PIL import Image
from pipeline_helpers import encode, scene, write_mode_images, write_tfrecord

from transforms.imaging.bands import DecodeError, to_rgb
from transforms.imaging.image_decoder import decode_image
from transforms.imaging.records import Failure, ImageHeader, Tile, redact
from transforms.imaging.tfrecord import RecordCorruption, ShardCorruption, example_bytes_feature, iter_tfrecords
from transforms.read import glob_root, key_for, sanitize_key

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


def test_high_bit_depth_rules():
  sixteen = Image.fromarray(np.array([[0, 257, 65535]], dtype=np.uint16))
  assert to_rgb(sixteen)[0, :, 0].tolist() == [0, 1, 255]
  small_int = Image.fromarray(np.array([[0, 7, 255]], dtype=np.int32))
  assert to_rgb(small_int)[0, :, 0].tolist() == [0, 7, 255]
  unit_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
  assert to_rgb(unit_float)[0, :, 0].tolist() == [0, 128, 255]
  wide_float = Image.fromarray(np.array([[-10.0, 0.0, 10.0, np.nan]], dtype=np.float32))
  assert to_rgb(wide_float)[0, :, 0].tolist() == [0, 128, 255, 128]


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


@pytest.mark.parametrize(
  "raw,key",
  [
    ("a/b.png", "a/b.png"),
    ("../../etc/passwd", "__/__/etc/passwd"),
    ("/abs/path/x.png", "abs/path/x.png"),
    ("gs://bucket/dir/x.png", "bucket/dir/x.png"),
    ("a/./b//c.png", "a/b/c.png"),
    ("C:\\Users\\x.png", "C_/Users/x.png"),
    ("spaces and ünïcode/名前.png", "spaces and ünïcode/名前.png"),
    ("ctrl\x00\nchars*?.png", "ctrl__chars__.png"),
    ("", "_"),
    ("..", "__"),
  ],
)
def test_sanitize_key(raw, key):
  assert sanitize_key(raw) == key


def test_keys_never_escape():
  for raw in ["../x", "a/../../x", "/../x", "..\\..\\x", "....//x", "~/x", "gs://b/../../x"]:
    key = sanitize_key(raw)
    assert not key.startswith("/")
    assert ".." not in key.split("/")
    out = os.path.normpath(os.path.join("/OUT/masks", key + ".png"))
    assert out.startswith("/OUT/masks/")


def test_glob_root_and_keys():
  assert glob_root("/data/in/*.png") == "/data/in/"
  assert glob_root("/data/in/**/x?.png") == "/data/in/"
  assert glob_root("gs://b/p/[ab]*.jpg") == "gs://b/p/"
  assert glob_root("/data/in/one.png") == "/data/in/"
  assert key_for("/data/in/sub/x.png", "/data/in/") == "sub/x.png"


def test_tfrecord_reader_skips_a_corrupt_record(tmp_path):
  path = str(tmp_path / "shard.tfrecord")
  write_tfrecord(path, [("a", b"1" * 10), ("b", b"2" * 10), ("c", b"3" * 10)])
  data = bytearray(open(path, "rb").read())
  first = struct.unpack("<Q", data[:8])[0] + 16
  data[first + 12 + 5] ^= 0xFF  # a payload byte of the second record
  results = list(iter_tfrecords(io.BytesIO(bytes(data))))
  assert [i for i, _ in results] == [0, 1, 2]
  assert isinstance(results[1][1], RecordCorruption)
  assert not isinstance(results[0][1], Exception) and not isinstance(results[2][1], Exception)
  data[first + 2] ^= 0xFF  # now its length header
  results = list(iter_tfrecords(io.BytesIO(bytes(data))))
  assert len(results) == 2 and isinstance(results[1][1], ShardCorruption)
  truncated = list(iter_tfrecords(io.BytesIO(bytes(data[: first + 20]))))
  assert isinstance(truncated[-1][1], ShardCorruption)


def test_example_class_is_tensorflows_schema(tmp_path):
  """transforms.imaging.tfrecord.Example has TensorFlow's schema and parses (and refuses) records as example_pb2 does."""
  from google.protobuf import descriptor_pb2
  from tensorflow.core.example import example_pb2 as tf_example
  from tensorflow.core.example import feature_pb2

  from transforms.imaging.tfrecord import Example, _example_schema

  theirs = descriptor_pb2.FileDescriptorProto()
  for module in (feature_pb2, tf_example):
    part = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(part)
    assert (part.package, part.syntax) == ("tensorflow", "proto3")
    theirs.message_type.extend(part.message_type)
  ours = _example_schema()
  for schema in (ours, theirs):
    for message in schema.message_type:
      for field in message.field:
        field.ClearField("json_name")
  assert list(ours.message_type) == list(theirs.message_type)

  example = tf_example.Example()
  example.features.feature["image/encoded"].bytes_list.value.append(b"\x00\x80" * 50)
  example.features.feature["image/key"].int64_list.value.extend([7, -3, 2**62])
  example.features.feature["scale"].float_list.value.extend([0.5, -2.25])
  payload = example.SerializeToString()
  parsed = Example.FromString(payload)
  assert parsed.SerializeToString(deterministic=True) == example.SerializeToString(deterministic=True)
  assert parsed.features.feature["image/key"].WhichOneof("kind") == "int64_list"
  for corrupt in (payload[:-3], b"\xff\xff", b"not a protobuf message"):
    with pytest.raises(Exception) as expected:
      tf_example.Example.FromString(corrupt)
    with pytest.raises(type(expected.value), match="Error parsing message with type 'tensorflow.Example'"):
      Example.FromString(corrupt)


def test_example_bytes_feature_reads_the_first_bytes_value(tmp_path):
  """The report's reader of one feature: the first bytes value, ValueError when there is none."""
  path = str(tmp_path / "shard.tfrecord")
  write_tfrecord(path, [("a", b"\x00\x80" * 200), (None, b"x"), ("c", None)])
  with open(path, "rb") as stream:
    payloads = [payload for _, payload in iter_tfrecords(stream)]
  assert [example_bytes_feature(payload, "image/encoded") for payload in payloads[:2]] == [b"\x00\x80" * 200, b"x"]
  assert example_bytes_feature(payloads[0], "image/key") == b"a"
  for payload, name in ((payloads[1], "image/key"), (payloads[2], "image/encoded"), (payloads[0], "image/missing")):
    with pytest.raises(ValueError, match="no bytes feature"):
      example_bytes_feature(payload, name)


class _FakeModel:
  """Segmenter stand-in: class = first channel % 3; fails on demand."""

  def __init__(self, poison_value=None):
    self.calls = []
    self.poison_value = poison_value

  def segment_with_stats(self, images, owned, num_classes):
    """Same outputs as Segmenter.segment_with_stats, reduced in numpy."""
    self.calls.append(images.shape)
    if self.poison_value is not None and (images == self.poison_value).all(axis=(1, 2, 3)).any():
      raise RuntimeError("poisoned tile")
    class_ids = (images[..., 0] % 3).astype(np.uint8)
    pixels = np.zeros((len(images), num_classes), np.int64)
    sums = np.zeros((len(images), num_classes), np.float64)
    for row, (top, bottom, left, right) in enumerate(owned):
      region = class_ids[row, top:bottom, left:right].ravel()
      pixels[row] = np.bincount(region, minlength=num_classes)[:num_classes]
      sums[row] = np.bincount(region, weights=np.full(region.shape, 0.5), minlength=num_classes)[:num_classes]
    return class_ids, pixels, sums, int(class_ids.max())


def _tile(key, pixels, index=0, count=1):
  h, w = pixels.shape[:2]
  return Tile(
    header=ImageHeader(uri=key, key=key, height=h, width=w),
    index=index,
    count=count,
    top=0,
    left=0,
    own_top=0,
    own_bottom=h,
    own_left=0,
    own_right=w,
    pixels=pixels,
  )


def test_handler_groups_by_shape_and_handles_empty_batches():
  from transforms.inference import SegmentationModelHandler
  from transforms.model_runtime import SegmenterHandle

  handler = SegmentationModelHandler(SegmenterHandle("unused"), num_classes=3, max_batch_size=8)
  assert handler.batch_elements_kwargs()["max_batch_size"] == 8
  model = _FakeModel()
  assert list(handler.run_inference([], model)) == []
  batch = [
    _tile("a", np.full((4, 5, 3), 1, np.uint8)),
    _tile("b", np.full((2, 2, 3), 2, np.uint8)),
    _tile("c", np.full((4, 5, 3), 4, np.uint8)),
  ]
  results = handler.run_inference(batch, model)
  assert sorted(model.calls) == [(1, 2, 2, 3), (2, 4, 5, 3)]
  assert [r.key for r in results] == ["a", "b", "c"]
  assert results[0].class_pixels.tolist() == [0, 20, 0]
  assert results[1].class_pixels.tolist() == [0, 0, 4]
  assert results[2].class_confidence.tolist() == [0, 10.0, 0]


def test_handler_retries_a_failed_batch_tile_by_tile():
  from transforms.inference import SegmentationModelHandler
  from transforms.model_runtime import SegmenterHandle

  handler = SegmentationModelHandler(SegmenterHandle("unused"), num_classes=3, max_batch_size=8)
  batch = [_tile(k, np.full((3, 3, 3), v, np.uint8)) for k, v in (("a", 1), ("bad", 9), ("c", 2))]
  results = handler.run_inference(batch, _FakeModel(poison_value=9))
  assert results[0].error is None and results[2].error is None
  assert results[1].error[0] == "RuntimeError" and "poisoned" in results[1].error[1]


def test_handler_rejects_class_ids_beyond_the_card():
  from transforms.inference import SegmentationModelHandler
  from transforms.model_runtime import SegmenterHandle

  handler = SegmentationModelHandler(SegmenterHandle("unused"), num_classes=2, max_batch_size=8)
  results = handler.run_inference([_tile("a", np.full((3, 3, 3), 2, np.uint8))], _FakeModel())
  assert results[0].error and "class id 2" in results[0].error[1]


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
