"""The TFRecord format without TensorFlow: CRC-checked record framing and tf.train.Example messages.

``iter_tfrecords`` reads a shard record by record so that a corrupt record
costs that record and a corrupt header ends only its shard, never the job.
``Example`` is tf.train.Example built by the protobuf library from its
schema (tensorflow/core/example/{feature,example}.proto) in a private
descriptor pool: parsing, errors on corrupt records and the message API are
protobuf's, exactly as with TensorFlow's ``example_pb2``, without importing
TensorFlow (3-5 s) in the pipeline's workers or the report. Used by
``transforms.read`` (the TFRecord input) and the report's gallery.
"""

import struct
from collections.abc import Iterator, Sequence
from typing import IO, Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def _masked_crc(data: bytes) -> int:
  import google_crc32c

  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class ShardCorruption(Exception):
  """The shard cannot be read past this point."""


class RecordCorruption(Exception):
  """One record's payload failed its CRC; the reader skips it."""


def iter_tfrecords(
  stream: IO[bytes], offsets: list[int] | None = None
) -> Iterator[tuple[int, bytes | RecordCorruption | ShardCorruption]]:
  """Yields (index, payload or RecordCorruption/ShardCorruption) per record.

  With a list ``offsets``, the byte offset of each yielded payload in the
  stream is appended to it.

  TFRecord framing: uint64 length, masked CRC32C of the length, payload,
  masked CRC32C of the payload. A bad payload CRC costs one record; a bad or
  truncated header ends the shard (there is no resynchronisation marker).
  """
  index = 0
  offset = 0
  while True:
    header = stream.read(12)
    if not header:
      return
    if len(header) < 12:
      yield index, ShardCorruption(f"shard ends inside a record header at byte {offset}")
      return
    length, length_crc = struct.unpack("<QI", header)
    if _masked_crc(header[:8]) != length_crc:
      yield index, ShardCorruption(f"corrupt record header at byte {offset}; the rest of the shard is unreadable")
      return
    payload = stream.read(length)
    footer = stream.read(4)
    if len(payload) < length or len(footer) < 4:
      yield index, ShardCorruption(f"shard ends inside record {index} (byte {offset})")
      return
    if offsets is not None:
      offsets.append(offset + 12)
    if _masked_crc(payload) != struct.unpack("<I", footer)[0]:
      yield index, RecordCorruption(f"record {index} at byte {offset} fails its CRC check (corrupt data)")
    else:
      yield index, payload
    index += 1
    offset += 16 + length


def _example_schema() -> descriptor_pb2.FileDescriptorProto:
  """tensorflow/core/example/{feature,example}.proto as one file (same package, names and field numbers)."""
  field = descriptor_pb2.FieldDescriptorProto
  optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED
  schema = descriptor_pb2.FileDescriptorProto(name="deconvseg/tf_example.proto", package="tensorflow", syntax="proto3")

  def message(
    name: str,
    *fields: tuple[str, int, int, str | None, str | None],
    nested: Sequence[descriptor_pb2.DescriptorProto] = (),
  ) -> Any:
    proto = schema.message_type.add(name=name)
    proto.nested_type.extend(nested)
    for number, (field_name, label, kind, type_name, oneof) in enumerate(fields, 1):
      proto.field.add(name=field_name, number=number, label=label, type=kind, type_name=type_name)
      if oneof is not None:
        if not proto.oneof_decl:
          proto.oneof_decl.add(name=oneof)
        proto.field[-1].oneof_index = 0
    return proto

  def map_entry(name: str, value_type: str) -> descriptor_pb2.DescriptorProto:
    entry = descriptor_pb2.DescriptorProto(name=name)
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=optional, type=field.TYPE_STRING)
    entry.field.add(name="value", number=2, label=optional, type=field.TYPE_MESSAGE, type_name=value_type)
    return entry

  message("BytesList", ("value", repeated, field.TYPE_BYTES, None, None))
  message("FloatList", ("value", repeated, field.TYPE_FLOAT, None, None)).field[0].options.packed = True
  int64 = message("Int64List", ("value", repeated, field.TYPE_INT64, None, None)).field[0].options
  int64.packed, int64.jstype = True, descriptor_pb2.FieldOptions.JS_STRING
  message(
    "Feature",
    ("bytes_list", optional, field.TYPE_MESSAGE, ".tensorflow.BytesList", "kind"),
    ("float_list", optional, field.TYPE_MESSAGE, ".tensorflow.FloatList", "kind"),
    ("int64_list", optional, field.TYPE_MESSAGE, ".tensorflow.Int64List", "kind"),
  )
  message(
    "Features",
    ("feature", repeated, field.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry", None),
    nested=[map_entry("FeatureEntry", ".tensorflow.Feature")],
  )
  message("FeatureList", ("feature", repeated, field.TYPE_MESSAGE, ".tensorflow.Feature", None))
  message(
    "FeatureLists",
    ("feature_list", repeated, field.TYPE_MESSAGE, ".tensorflow.FeatureLists.FeatureListEntry", None),
    nested=[map_entry("FeatureListEntry", ".tensorflow.FeatureList")],
  )
  message("Example", ("features", optional, field.TYPE_MESSAGE, ".tensorflow.Features", None))
  message(
    "SequenceExample",
    ("context", optional, field.TYPE_MESSAGE, ".tensorflow.Features", None),
    ("feature_lists", optional, field.TYPE_MESSAGE, ".tensorflow.FeatureLists", None),
  )
  return schema


# A private pool: TensorFlow's own example.proto may be in the default pool of the same process.
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_example_schema())
Example = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.Example"))


def example_bytes_feature(example: bytes, name: str) -> bytes:
  """The first bytes value of feature ``name`` (Example.features.feature[name].bytes_list.value[0]).

  Raises ValueError when the record has no such value, and protobuf's
  DecodeError when it is not an Example, as ``Example.FromString`` does.
  """
  features = Example.FromString(example).features.feature
  if name in features and features[name].bytes_list.value:
    return features[name].bytes_list.value[0]
  raise ValueError(f"the record has no bytes feature {name!r}")
