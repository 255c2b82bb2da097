"""Tests of transforms/imaging/tfrecord.py: the TFRecord reader and its tf.train.Example schema."""

import io
import struct

import pytest
from pipeline_helpers import write_tfrecord

from transforms.imaging.tfrecord import RecordCorruption, ShardCorruption, example_bytes_feature, iter_tfrecords


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
