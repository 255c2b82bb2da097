"""The TFRecord format without TensorFlow: CRC-checked record framing and a walk of a tf.train.Example.

``iter_tfrecords`` reads a shard record by record so that a corrupt record
costs that record and a corrupt header ends only its shard, never the job.
``example_bytes_feature`` reads one bytes feature of an Example from the
protobuf wire format, for readers that should not import TensorFlow. Used by
``transforms.read`` (the TFRecord input) and the report's gallery.
"""

import struct


def _masked_crc(data: bytes) -> int:
  import google_crc32c

  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class ShardCorruption(Exception):
  """The shard cannot be read past this point."""


class RecordCorruption(Exception):
  """One record's payload failed its CRC; the reader skips it."""


def iter_tfrecords(stream, offsets=None):
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


def _varint(data, pos):
  result = shift = 0
  while True:
    byte = data[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return result, pos
    shift += 7


def _proto_fields(data):
  """(field number, wire type, value) of one protobuf message, enough to walk a tf.train.Example."""
  pos = 0
  while pos < len(data):
    tag, pos = _varint(data, pos)
    field, wire = tag >> 3, tag & 7
    if wire == 0:
      value, pos = _varint(data, pos)
    elif wire == 1:
      value, pos = data[pos : pos + 8], pos + 8
    elif wire == 2:
      length, pos = _varint(data, pos)
      value, pos = data[pos : pos + length], pos + length
    elif wire == 5:
      value, pos = data[pos : pos + 4], pos + 4
    else:
      raise ValueError(f"unsupported protobuf wire type {wire}")
    yield field, wire, value


def example_bytes_feature(example: bytes, name: str) -> bytes:
  """The first bytes value of feature ``name`` (Example.features.feature[name].bytes_list.value[0]).

  A walk of the protobuf wire format for readers outside the pipeline: the
  report shows a few shard records as thumbnails, and importing TensorFlow
  (3-5 s) for that would cost more than the rest of the report.
  ``ReadTFRecordShardFn`` parses with TensorFlow's ``example_pb2``, which it
  has loaded anyway; tests/test_pipeline_units.py checks that both agree.
  """
  for field, wire, features in _proto_fields(memoryview(example)):
    if (field, wire) != (1, 2):
      continue
    for entry_field, entry_wire, entry in _proto_fields(features):
      if (entry_field, entry_wire) != (1, 2):
        continue
      key, feature = None, b""
      for item_field, _, value in _proto_fields(entry):
        if item_field == 1:
          key = bytes(value).decode("utf-8", "replace")
        elif item_field == 2:
          feature = value
      if key != name:
        continue
      for kind, kind_wire, values in _proto_fields(feature):
        if (kind, kind_wire) == (1, 2):  # bytes_list
          for value_field, _, value in _proto_fields(values):
            if value_field == 1:
              return bytes(value)
  raise ValueError(f"the record has no bytes feature {name!r}")
