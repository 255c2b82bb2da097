"""The Beam step that turns a TFRecord shard into one ImageRef per good record and one failure per bad one.

Apart from ``transforms.read``'s listing and de-duplication because a shard
is a source of its own: records of ``tf.train.Example`` read by a CRC-checking
reader (``transforms.imaging.tfrecord``) so a corrupt record becomes a failure record
instead of killing the job; key = the key feature, else ``<shard>/<record
index>``.
"""

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import accounting
from transforms.imaging.input_keys import sanitize_key, shard_name
from transforms.imaging.records import FAILED, STAGE_READ, Failure, ImageRef
from transforms.imaging.tfrecord import Example, iter_tfrecords


def _feature_text(feature: Any) -> str | None:
  if feature.bytes_list.value:
    return feature.bytes_list.value[0].decode("utf-8", "replace")
  if feature.int64_list.value:
    return str(feature.int64_list.value[0])
  return None


def _image_slice(payload: bytes, image: bytes) -> int | None:
  """Where ``image`` (a bytes feature of the Example in ``payload``) lies in it, or None if not unambiguous.

  A protobuf bytes field is stored verbatim, so the image is a contiguous
  slice of the record; a second copy of the same bytes would make the slice
  ambiguous, and then the record keeps its bytes.
  """
  start = payload.find(image)
  if start < 0 or payload.find(image, start + 1) >= 0:
    return None
  return start


class ReadTFRecordShardFn(beam.DoFn):
  """A shard path -> one ImageRef per good record, one Failure per bad one.

  Records of uncompressed shards become references (shard offset and length
  of the image bytes), so the de-duplicating shuffle moves no image bytes and
  decode reads them by offset; records of compressed (``.gz``) shards, which
  cannot be read by offset, carry their bytes.
  """

  def __init__(self, image_feature: str, key_feature: str) -> None:
    self._image_feature = image_feature
    self._key_feature = key_feature
    self._records = Metrics.counter(accounting.NAMESPACE, "tfrecord_records")

  def process(self, metadata: Any) -> Iterator[Any]:
    path = metadata.path
    shard = shard_name(path)
    try:
      stream = FileSystems.open(path, compression_type=CompressionTypes.AUTO)
    except Exception as exc:
      yield beam.pvalue.TaggedOutput(
        FAILED, Failure(path, sanitize_key(shard), STAGE_READ, type(exc).__name__, f"cannot open TFRecord shard: {exc}")
      )
      return
    by_offset = CompressionTypes.detect_compression_type(path) == CompressionTypes.UNCOMPRESSED
    offsets: list[int] | None = [] if by_offset else None
    with stream:
      records = iter_tfrecords(stream, offsets)
      while True:
        try:
          index, payload = next(records)
        except StopIteration:
          break
        except (OSError, EOFError) as exc:  # e.g. a broken gzip stream
          yield beam.pvalue.TaggedOutput(
            FAILED,
            Failure(
              path, sanitize_key(f"{shard}/unreadable"), STAGE_READ, type(exc).__name__, f"shard unreadable: {exc}"
            ),
          )
          break
        self._records.inc()
        yield self._record(f"{path}#{index}", sanitize_key(f"{shard}/{index:06d}"), payload, offsets)

  def _record(self, uri: str, fallback_key: str, payload: bytes | Exception, offsets: list[int] | None) -> Any:
    """One record -> its ImageRef, or its Failure (tagged) when it holds no readable image.

    ``offsets`` (uncompressed shards only) ends with this record's offset in the shard.
    """
    if isinstance(payload, Exception):
      return beam.pvalue.TaggedOutput(
        FAILED, Failure(uri, fallback_key, STAGE_READ, type(payload).__name__, str(payload))
      )
    try:
      example = Example.FromString(payload)
    except Exception as exc:
      return beam.pvalue.TaggedOutput(
        FAILED, Failure(uri, fallback_key, STAGE_READ, type(exc).__name__, "record is not a tf.train.Example")
      )
    features = example.features.feature
    key = fallback_key
    if self._key_feature in features:
      text = _feature_text(features[self._key_feature])
      if text:
        key = sanitize_key(text)
    if self._image_feature not in features or not features[self._image_feature].bytes_list.value:
      return beam.pvalue.TaggedOutput(
        FAILED,
        Failure(
          uri,
          key,
          STAGE_READ,
          "MissingFeature",
          f"Example has no bytes feature '{self._image_feature}' (set --tfrecord_image_feature)",
        ),
      )
    image = features[self._image_feature].bytes_list.value[0]
    start = _image_slice(payload, image) if offsets else None
    if start is None or offsets is None:
      return ImageRef(uri=uri, key=key, data=image)
    return ImageRef(uri=uri, key=key, offset=offsets[-1] + start, length=len(image))
