"""Find the inputs and give each a stable, safe key.

Three sources, all through Beam's filesystems (local or ``gs://``):

* glob patterns (``MatchInputsFn``, with Beam's pattern syntax); key = path
  relative to the pattern's root (the directory part before the first wildcard);
* manifests (``ReadFromText``): one URI per line, ``#`` comments and blank
  lines ignored, relative entries resolved against the manifest's directory;
  key = path relative to that directory, otherwise the URI without scheme;
* TFRecord shards of ``tf.train.Example`` (``.gz`` by extension): read by a
  CRC-checking reader (``transforms.tfrecord``) so a corrupt record becomes a failure record instead of
  killing the job; key = the key feature, else ``<shard>/<record index>``.

Keys go through ``sanitize_key`` so an output path built from one can never
leave ``OUT``; two inputs with the same key are resolved deterministically
(smallest URI wins, the others are recorded as failures).

Local paths that an ``--input`` or ``--tfrecord`` glob matches or a manifest
lists go through one rule, ``entry_problem``: a regular file is read; a
dangling symbolic link, a link loop, an entry that cannot be examined or read
and a special file (FIFO, socket, device) become ``read`` failures with the
reason; a directory is skipped with a warning that counts them. Beam's own local listing drops the first kinds
without a word and would hang on reading a FIFO, so local globs are listed
here (``match_local``, with Beam's pattern syntax); a Cloud Storage listing
holds objects only, and goes through ``FileSystems.match``.
"""

import errno
import hashlib
import logging
import os
import posixpath
import re
import stat
from typing import Iterator, List, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import accounting
from transforms.records import FAILED, STAGE_READ, Failure, ImageRef
from transforms.tfrecord import Example, iter_tfrecords

_LOG = logging.getLogger(__name__)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_GLOB_CHARS = "*?["
_UNSAFE_CHARS = set('*?[]"<>|:')
_MAX_COMPONENT_BYTES = 200
DIRECTORY = "directory"  # entry_problem's answer for a directory: skipped, not failed
_SPECIAL_KINDS = (
  (stat.S_ISFIFO, "FIFO"),
  (stat.S_ISSOCK, "socket"),
  (stat.S_ISCHR, "character device"),
  (stat.S_ISBLK, "block device"),
)
_LISTED_DIRECTORIES = 5  # directories named in a skip warning; the rest are counted


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


def entry_problem(path: str) -> Optional[str]:
  """None for a local regular file to read, ``DIRECTORY``, or why the entry cannot be read (its failure message).

  The one rule for local entries, whether a glob matched them or a manifest
  lists them; decided from the entry itself (``stat``, ``lstat``), before
  anything opens it.
  """
  try:
    status = os.stat(path)
  except OSError as exc:
    if exc.errno == errno.ELOOP:
      return "symbolic link loop"
    if exc.errno == errno.ENOENT and os.path.islink(path):
      try:
        return f"dangling symbolic link to {os.readlink(path)}"
      except OSError:
        return "dangling symbolic link"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
      return "no such file"
    if exc.errno in (errno.EACCES, errno.EPERM):
      return "permission denied"
    return f"cannot examine the file: {exc.strerror or exc}"
  if stat.S_ISDIR(status.st_mode):
    return DIRECTORY
  if not stat.S_ISREG(status.st_mode):
    kind = next((name for test, name in _SPECIAL_KINDS if test(status.st_mode)), "special file")
    return f"not a regular file ({kind})"
  if not os.access(path, os.R_OK):
    return "permission denied"
  return None


def _error_type(problem: str) -> str:
  """The failure record's ``error_type`` for an ``entry_problem`` message."""
  for start, name in (
    ("dangling", "DanglingSymlink"),
    ("symbolic link loop", "SymlinkLoop"),
    ("not a regular file", "NotARegularFile"),
    ("permission", "PermissionDenied"),
    ("no such file", "FileNotFound"),
    ("cannot list", "UnlistableDirectory"),
  ):
    if problem.startswith(start):
      return name
  return "UnreadableEntry"


class Entry(NamedTuple):
  """A path a pattern matched, and what to do with it: ``problem`` None (read), ``DIRECTORY`` or a failure reason."""

  path: str
  problem: Optional[str]


def _is_local(path: str) -> bool:
  return not _SCHEME.match(path)


def _depth_rule(rest: str):
  """(component regexes, index from which any depth can match or None) of a pattern below its listed folder.

  ``**``, ``?`` and ``[...]`` can match ``/`` in Beam's syntax, so from the
  first component holding one, any folder may hold matches.
  """
  parts = rest.split("/")
  free = next((i for i, part in enumerate(parts) if "**" in part or "?" in part or "[" in part), None)
  return [re.compile(FileSystem.translate_pattern(part)) for part in parts], free


def match_local(pattern: str) -> Iterator[Entry]:
  """Every local entry ``pattern`` matches, with its ``entry_problem``; Beam's pattern syntax.

  Like Beam's local listing it lists from the folder before the first
  wildcard and does not follow symbolic links to folders, but it keeps what
  Beam drops (dangling links, loops, special files, folders) for
  ``entry_problem`` to judge, and only walks folders that can hold matches.
  A folder below the first that cannot be listed and could hold matches is
  a failure too; the first one raises its ``OSError``, as the pattern then
  matches nothing that can be judged.
  A matched folder is reported (``DIRECTORY``) when the walk does not read
  what is below it.
  """
  prefix = re.match(r"^[^[*?]*", pattern).group(0)
  if prefix == pattern:
    if os.path.lexists(pattern):
      yield Entry(pattern, entry_problem(pattern))
    else:
      yield Entry(pattern, "no such file")
    return
  top = os.path.dirname(prefix)
  regex = re.compile(FileSystem.translate_pattern(pattern))
  parts, free = _depth_rule(pattern[len(top) :].lstrip("/"))

  def descends(depth, name):
    if free is not None and depth >= free:
      return True
    return depth < len(parts) - 1 and parts[depth].match(name) is not None

  stack = [(top, 0)]
  while stack:
    folder, depth = stack.pop()
    try:
      with os.scandir(folder) as listing:
        found = sorted(listing, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):  # not there (any more): nothing to match in it
      continue
    except OSError as exc:
      if folder == top:
        raise
      yield Entry(folder, f"cannot list the folder: {(exc.strerror or str(exc)).lower()}")
      continue
    for entry in found:
      path = os.path.join(folder, entry.name)
      try:
        real_dir = entry.is_dir(follow_symlinks=False)
      except OSError:
        real_dir = False
      walk = real_dir and descends(depth, entry.name)
      if walk:
        stack.append((path, depth + 1))
      if regex.match(path) is None:
        continue
      if real_dir:
        if not walk:
          yield Entry(path, DIRECTORY)
        continue
      yield Entry(path, entry_problem(path))


def match_entries(pattern: str) -> List[Entry]:
  """``match_local`` for a local pattern; else the object listing (folder placeholders ending in '/' dropped)."""
  if _is_local(pattern):
    return list(match_local(pattern))
  results = FileSystems.match([pattern])
  return [Entry(m.path, None) for result in results for m in result.metadata_list if not m.path.endswith("/")]


def _warn_directories(source: str, directories: List[str]):
  """The counted warning for folders an input matched but whose files it does not read."""
  if not directories:
    return
  shown = ", ".join(directories[:_LISTED_DIRECTORIES])
  more = f" and {len(directories) - _LISTED_DIRECTORIES} more" if len(directories) > _LISTED_DIRECTORIES else ""
  _LOG.warning(
    "%s: skipped %d director%s (%s%s); a directory is not an image: to read the files below one, "
    "give DIR/** (every file at any depth)",
    source,
    len(directories),
    "y" if len(directories) == 1 else "ies",
    shown,
    more,
  )


def _read_failure(path: str, key: str, problem: str) -> Failure:
  return Failure(path, key, STAGE_READ, _error_type(problem), problem)


def _shard_name(path: str) -> str:
  """A TFRecord shard's file name without its extensions: the first part of its records' fallback keys."""
  shard = posixpath.basename(path)
  for suffix in (".gz", ".tfrecord", ".tfrecords"):
    shard = shard[: -len(suffix)] if shard.endswith(suffix) else shard
  return shard


class MatchInputsFn(beam.DoFn):
  """A glob pattern -> one ImageRef per file to read, one ``read`` Failure per entry that cannot be read.

  With ``shards`` (``--tfrecord``), each file to read is passed on as its
  ``Entry`` for ``ReadTFRecordShardFn``. Directories the pattern matches are
  skipped with one counted warning per pattern and the ``directories_skipped``
  counter.
  """

  def __init__(self, root: str, shards: bool = False):
    self._root = root
    self._shards = shards
    self._skipped = Metrics.counter(accounting.NAMESPACE, "directories_skipped")

  def process(self, pattern):
    directories = []
    for entry in match_entries(pattern):
      key = sanitize_key(_shard_name(entry.path)) if self._shards else key_for(entry.path, self._root)
      if entry.problem is None:
        yield entry if self._shards else ImageRef(entry.path, key)
      elif entry.problem == DIRECTORY:
        directories.append(entry.path)
      else:
        yield beam.pvalue.TaggedOutput(FAILED, _read_failure(entry.path, key, entry.problem))
    self._skipped.inc(len(directories))
    _warn_directories(f"{'--tfrecord' if self._shards else '--input'} {pattern!r}", directories)


def manifest_uri(entry: str, manifest_dir: str) -> str:
  """A manifest line's URI: absolute or with a scheme as given, else relative to the manifest's folder."""
  if _SCHEME.match(entry) or entry.startswith("/"):
    uri = entry
  else:
    uri = FileSystems.join(manifest_dir, entry) if manifest_dir else entry
  return uri if _SCHEME.match(uri) else posixpath.normpath(uri)


class ManifestEntriesFn(beam.DoFn):
  """A manifest line -> an ImageRef, a ``read`` Failure, or nothing (comments, blank lines, directories).

  Local entries go through ``entry_problem``, the rule globs use; listed
  directories are counted and named in one warning per bundle.
  """

  def __init__(self, manifest: str, manifest_dir: str):
    self._manifest = manifest
    self._manifest_dir = manifest_dir
    self._skipped = Metrics.counter(accounting.NAMESPACE, "directories_skipped")

  def start_bundle(self):
    self._directories = []

  def process(self, line: str):
    entry = line.strip()
    if not entry or entry.startswith("#"):
      return
    uri = manifest_uri(entry, self._manifest_dir)
    key = key_for(uri, self._manifest_dir.rstrip("/") + "/")
    problem = entry_problem(uri) if _is_local(uri) else None
    if problem is None:
      yield ImageRef(uri=uri, key=key)
    elif problem == DIRECTORY:
      self._directories.append(uri)
      self._skipped.inc()
    else:
      yield beam.pvalue.TaggedOutput(FAILED, _read_failure(uri, key, problem))

  def finish_bundle(self):
    _warn_directories(f"--manifest {self._manifest}", self._directories)
    self._directories = []


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
    self._records = Metrics.counter(accounting.NAMESPACE, "tfrecord_records")

  def process(self, metadata):
    path = metadata.path
    shard = _shard_name(path)
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
    refs, unreadable = [], []
    for i, pattern in enumerate(self._globs):
      matched = (
        pbegin
        | f"Pattern{i}" >> beam.Create([pattern])
        | f"MatchGlob{i}" >> beam.ParDo(MatchInputsFn(glob_root(pattern))).with_outputs(FAILED, main="refs")
      )
      refs.append(matched.refs)
      unreadable.append(matched[FAILED])
    for i, manifest in enumerate(self._manifests):
      manifest_dir = manifest[: manifest.rfind("/") + 1]
      listed = (
        pbegin
        | f"ReadManifest{i}" >> beam.io.ReadFromText(manifest)
        | f"ManifestEntries{i}"
        >> beam.ParDo(ManifestEntriesFn(manifest, manifest_dir)).with_outputs(FAILED, main="refs")
      )
      refs.append(listed.refs)
      unreadable.append(listed[FAILED])
    for i, pattern in enumerate(self._tfrecords):
      matched = (
        pbegin
        | f"ShardPattern{i}" >> beam.Create([pattern])
        | f"MatchShards{i}" >> beam.ParDo(MatchInputsFn("", shards=True)).with_outputs(FAILED, main="shards")
      )
      shards = (
        matched.shards
        | f"SpreadShards{i}" >> beam.Reshuffle()
        | f"ReadShards{i}"
        >> beam.ParDo(ReadTFRecordShardFn(self._image_feature, self._key_feature)).with_outputs(FAILED, main="refs")
      )
      refs.append(shards.refs)
      unreadable += [matched[FAILED], shards[FAILED]]
    all_refs = refs | "AllInputs" >> beam.Flatten()
    unique = (
      all_refs
      | "KeyByOutputKey" >> beam.ParDo(KeyByOutputKeyFn())
      | "GroupByOutputKey" >> beam.GroupByKey()
      | "ResolveDuplicateKeys" >> beam.ParDo(ResolveDuplicateKeysFn()).with_outputs(FAILED, main="refs")
    )
    failures = unreadable + [unique[FAILED]]
    read_failures = failures | "ReadFailures" >> beam.Flatten()
    # Every input found, good or not: a URI per ImageRef plus one per entry or
    # record that could not be turned into an ImageRef.
    inputs = [all_refs | "InputUris" >> beam.Map(lambda ref: ref.uri)] + [
      f | f"UnreadableUris{i}" >> beam.Map(lambda failure: failure.uri) for i, f in enumerate(unreadable)
    ]
    return unique.refs, read_failures, inputs | "AllInputUris" >> beam.Flatten()
