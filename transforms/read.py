"""Find the inputs and give each a stable, safe key.

Three sources, all through Beam's filesystems (local or ``gs://``):

* glob patterns (``MatchFiles`` + ``ReadMatches``); key = path relative to the
  pattern's root (the directory part before the first wildcard);
* manifests (``ReadFromText``): one URI per line, ``#`` comments and blank
  lines ignored, relative entries resolved against the manifest's directory;
  key = path relative to that directory, otherwise the URI without scheme;
* TFRecord shards of ``tf.train.Example`` (``.gz`` by extension): read by a
  CRC-checking reader (``transforms.tfrecord``) so a corrupt record becomes a failure record instead of
  killing the job; key = the key feature, else ``<shard>/<record index>``.

Keys go through ``sanitize_key`` so an output path built from one can never
leave ``OUT``; two inputs with the same key are resolved deterministically
(smallest URI wins, the others are recorded as failures).
"""

import hashlib
import posixpath
import re

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import accounting
from transforms.records import FAILED, STAGE_READ, Failure, ImageRef
from transforms.tfrecord import Example, iter_tfrecords

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_GLOB_CHARS = "*?["
_UNSAFE_CHARS = set('*?[]"<>|:')
_MAX_COMPONENT_BYTES = 200


def sanitize_key(raw: str) -> str:
  """A relative, '/'-separated key that cannot escape the output directory.

  Drops the URI scheme, empty and '.' components; '..' becomes '__'; control
  characters, wildcard and shell-hostile characters become '_'; components
  over 200 bytes are shortened with a hash suffix. Unicode and spaces stay.
  """
  text = _SCHEME.sub("", raw.replace("\\", "/"))
  parts = []
  for part in text.split("/"):
    if part in ("", "."):
      continue
    if part == "..":
      part = "__"
    part = "".join("_" if (not ch.isprintable() or ch in _UNSAFE_CHARS) else ch for ch in part)
    if len(part.encode("utf-8")) > _MAX_COMPONENT_BYTES:
      digest = hashlib.sha1(part.encode("utf-8")).hexdigest()[:12]
      part = part.encode("utf-8")[:100].decode("utf-8", "ignore") + "~" + digest
    parts.append(part)
  return "/".join(parts) or "_"


def glob_root(pattern: str) -> str:
  """The directory part of a glob before its first wildcard, with trailing '/'."""
  cut = min([pattern.find(ch) for ch in _GLOB_CHARS if ch in pattern] or [len(pattern)])
  prefix = pattern[:cut]
  return prefix[: prefix.rfind("/") + 1]


def key_for(path: str, root: str) -> str:
  if root and path.startswith(root):
    return sanitize_key(path[len(root) :])
  return sanitize_key(path)


def _manifest_ref(line: str, manifest_dir: str):
  entry = line.strip()
  if not entry or entry.startswith("#"):
    return []
  if _SCHEME.match(entry) or entry.startswith("/"):
    uri = entry
  else:
    uri = FileSystems.join(manifest_dir, entry) if manifest_dir else entry
  if not _SCHEME.match(uri):
    uri = posixpath.normpath(uri)
  return [ImageRef(uri=uri, key=key_for(uri, manifest_dir.rstrip("/") + "/"))]


def _feature_text(feature):
  if feature.bytes_list.value:
    return feature.bytes_list.value[0].decode("utf-8", "replace")
  if feature.int64_list.value:
    return str(feature.int64_list.value[0])
  return None


def _image_slice(payload: bytes, image: bytes):
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

  def __init__(self, image_feature: str, key_feature: str):
    self._image_feature = image_feature
    self._key_feature = key_feature
    self._records = Metrics.counter("deconvseg", "tfrecord_records")

  def process(self, metadata):
    path = metadata.path
    shard = posixpath.basename(path)
    for suffix in (".gz", ".tfrecord", ".tfrecords"):
      shard = shard[: -len(suffix)] if shard.endswith(suffix) else shard
    try:
      stream = FileSystems.open(path, compression_type=CompressionTypes.AUTO)
    except Exception as exc:
      yield beam.pvalue.TaggedOutput(
        FAILED, Failure(path, sanitize_key(shard), STAGE_READ, type(exc).__name__, f"cannot open TFRecord shard: {exc}")
      )
      return
    by_offset = CompressionTypes.detect_compression_type(path) == CompressionTypes.UNCOMPRESSED
    offsets = [] if by_offset else None
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
        uri = f"{path}#{index}"
        fallback_key = sanitize_key(f"{shard}/{index:06d}")
        self._records.inc()
        if isinstance(payload, Exception):
          yield beam.pvalue.TaggedOutput(
            FAILED, Failure(uri, fallback_key, STAGE_READ, type(payload).__name__, str(payload))
          )
          continue
        try:
          example = Example.FromString(payload)
        except Exception as exc:
          yield beam.pvalue.TaggedOutput(
            FAILED, Failure(uri, fallback_key, STAGE_READ, type(exc).__name__, "record is not a tf.train.Example")
          )
          continue
        features = example.features.feature
        key = fallback_key
        if self._key_feature in features:
          text = _feature_text(features[self._key_feature])
          if text:
            key = sanitize_key(text)
        if self._image_feature not in features or not features[self._image_feature].bytes_list.value:
          yield beam.pvalue.TaggedOutput(
            FAILED,
            Failure(
              uri,
              key,
              STAGE_READ,
              "MissingFeature",
              f"Example has no bytes feature '{self._image_feature}' (set --tfrecord_image_feature)",
            ),
          )
          continue
        image = features[self._image_feature].bytes_list.value[0]
        start = _image_slice(payload, image) if by_offset and offsets else None
        if start is None:
          yield ImageRef(uri=uri, key=key, data=image)
        else:
          yield ImageRef(uri=uri, key=key, offset=offsets[-1] + start, length=len(image))


class KeyByOutputKeyFn(beam.DoFn):
  """ImageRef -> (key, ref), measuring what enters the de-duplicating shuffle (``transforms.accounting``)."""

  def __init__(self):
    self._refs = accounting.distribution(accounting.SHUFFLE_REFS)
    self._payloads = accounting.distribution(accounting.SHUFFLE_TFRECORD)

  def process(self, ref):
    self._refs.update(accounting.ref_bytes(ref))
    if ref.data is not None:
      self._payloads.update(len(ref.data))
    yield ref.key, ref


class ResolveDuplicateKeysFn(beam.DoFn):
  """(key, refs) -> the ref with the smallest URI; the rest become failures."""

  def process(self, keyed):
    key, refs = keyed
    refs = sorted(refs, key=lambda ref: ref.uri)
    yield refs[0]
    for duplicate in refs[1:]:
      yield beam.pvalue.TaggedOutput(
        FAILED,
        Failure(
          duplicate.uri,
          key,
          STAGE_READ,
          "DuplicateKey",
          f"another input ({refs[0].uri}) has the same output key '{key}'; rename one of them",
        ),
      )


class ReadImages(beam.PTransform):
  """Composite: all sources -> (unique ImageRefs, read failures, input URIs).

  The GroupByKey on the key both de-duplicates and redistributes the work, so
  decoding and inference spread over workers even when one shard or one
  manifest lists everything.
  """

  def __init__(self, globs, manifests=(), tfrecords=(), image_feature="image/encoded", key_feature="image/key"):
    super().__init__()
    self._globs = list(globs)
    self._manifests = list(manifests)
    self._tfrecords = list(tfrecords)
    self._image_feature = image_feature
    self._key_feature = key_feature

  def expand(self, pbegin):
    refs, failures = [], []
    for i, pattern in enumerate(self._globs):
      root = glob_root(pattern)
      refs.append(
        pbegin
        | f"MatchGlob{i}" >> fileio.MatchFiles(pattern)
        | f"ReadMatches{i}" >> fileio.ReadMatches()
        | f"KeyFiles{i}"
        >> beam.Map(lambda readable, r: ImageRef(readable.metadata.path, key_for(readable.metadata.path, r)), root)
      )
    for i, manifest in enumerate(self._manifests):
      manifest_dir = manifest[: manifest.rfind("/") + 1]
      refs.append(
        pbegin
        | f"ReadManifest{i}" >> beam.io.ReadFromText(manifest)
        | f"ManifestEntries{i}" >> beam.FlatMap(_manifest_ref, manifest_dir)
      )
    for i, pattern in enumerate(self._tfrecords):
      shards = (
        pbegin
        | f"MatchShards{i}" >> fileio.MatchFiles(pattern)
        | f"SpreadShards{i}" >> beam.Reshuffle()
        | f"ReadShards{i}"
        >> beam.ParDo(ReadTFRecordShardFn(self._image_feature, self._key_feature)).with_outputs(FAILED, main="refs")
      )
      refs.append(shards.refs)
      failures.append(shards[FAILED])
    all_refs = refs | "AllInputs" >> beam.Flatten()
    unique = (
      all_refs
      | "KeyByOutputKey" >> beam.ParDo(KeyByOutputKeyFn())
      | "GroupByOutputKey" >> beam.GroupByKey()
      | "ResolveDuplicateKeys" >> beam.ParDo(ResolveDuplicateKeysFn()).with_outputs(FAILED, main="refs")
    )
    shard_failures = list(failures)
    failures.append(unique[FAILED])
    read_failures = failures | "ReadFailures" >> beam.Flatten()
    # Every input found, good or not: a URI per ImageRef plus one per record
    # the shard reader could not turn into an ImageRef.
    inputs = [all_refs | "InputUris" >> beam.Map(lambda ref: ref.uri)] + [
      f | f"UnreadableUris{i}" >> beam.Map(lambda failure: failure.uri) for i, f in enumerate(shard_failures)
    ]
    return unique.refs, read_failures, inputs | "AllInputUris" >> beam.Flatten()
