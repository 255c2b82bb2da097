"""Find the inputs and give each a stable, safe key: the Beam steps of ``ReadImages``.

Three sources, all through Beam's filesystems (local or ``gs://``):

* glob patterns (``MatchInputsFn``, with Beam's pattern syntax); key = path
  relative to the pattern's root (the directory part before the first wildcard);
* manifests (``ReadFromText``): one URI per line, ``#`` comments and blank
  lines ignored, relative entries resolved against the manifest's directory;
  key = path relative to that directory, otherwise the URI without scheme;
* TFRecord shards of ``tf.train.Example`` (``.gz`` by extension): read by
  ``transforms.tfrecord_shards`` with a CRC-checking reader (``transforms.imaging.tfrecord``)
  so a corrupt record becomes a failure record instead of killing the job;
  key = the key feature, else ``<shard>/<record index>``.

Keys go through ``sanitize_key`` (``transforms.imaging.input_keys``) so an output path
built from one can never leave ``OUT``; two inputs with the same key are
resolved deterministically (smallest URI wins, the others are recorded as
failures).

Local paths that an ``--input`` or ``--tfrecord`` glob matches or a manifest
lists go through one rule, ``entry_problem`` (``transforms.local_entries``,
which also lists local globs itself, ``match_local``): a regular file is read;
what cannot be read becomes a ``read`` failure with the reason; a directory
is skipped with a warning that counts them.
"""

import logging
import posixpath
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import accounting
from transforms.imaging.input_keys import SCHEME, glob_root, key_for, sanitize_key, shard_name
from transforms.imaging.records import FAILED, STAGE_READ, Failure, ImageRef
from transforms.local_entries import DIRECTORY, entry_problem, error_type, is_local, match_entries, match_local
from transforms.tfrecord_shards import ReadTFRecordShardFn

__all__ = [
  "DIRECTORY",
  "KeyByOutputKeyFn",
  "ManifestEntriesFn",
  "MatchInputsFn",
  "ReadImages",
  "ReadTFRecordShardFn",
  "ResolveDuplicateKeysFn",
  "entry_problem",
  "glob_root",
  "key_for",
  "manifest_uri",
  "match_entries",
  "match_local",
  "sanitize_key",
]

_LOG = logging.getLogger(__name__)
_LISTED_DIRECTORIES = 5  # directories named in a skip warning; the rest are counted


def _warn_directories(source: str, directories: list[str]) -> None:
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
  return Failure(path, key, STAGE_READ, error_type(problem), problem)


class MatchInputsFn(beam.DoFn):
  """A glob pattern -> one ImageRef per file to read, one ``read`` Failure per entry that cannot be read.

  With ``shards`` (``--tfrecord``), each file to read is passed on as its
  ``Entry`` for ``ReadTFRecordShardFn``. Directories the pattern matches are
  skipped with one counted warning per pattern and the ``directories_skipped``
  counter.
  """

  def __init__(self, root: str, shards: bool = False) -> None:
    self._root = root
    self._shards = shards
    self._skipped = Metrics.counter(accounting.NAMESPACE, "directories_skipped")

  def process(self, pattern: Any) -> Iterator[Any]:
    directories = []
    for entry in match_entries(pattern):
      key = sanitize_key(shard_name(entry.path)) if self._shards else key_for(entry.path, self._root)
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
  if SCHEME.match(entry) or entry.startswith("/"):
    uri = entry
  else:
    uri = FileSystems.join(manifest_dir, entry) if manifest_dir else entry
  return uri if SCHEME.match(uri) else posixpath.normpath(uri)


class ManifestEntriesFn(beam.DoFn):
  """A manifest line -> an ImageRef, a ``read`` Failure, or nothing (comments, blank lines, directories).

  Local entries go through ``entry_problem``, the rule globs use; listed
  directories are counted and named in one warning per bundle.
  """

  def __init__(self, manifest: str, manifest_dir: str) -> None:
    self._manifest = manifest
    self._manifest_dir = manifest_dir
    self._skipped = Metrics.counter(accounting.NAMESPACE, "directories_skipped")

  def start_bundle(self) -> None:
    self._directories: list[str] = []

  def process(self, line: str) -> Iterator[Any]:
    entry = line.strip()
    if not entry or entry.startswith("#"):
      return
    uri = manifest_uri(entry, self._manifest_dir)
    key = key_for(uri, self._manifest_dir.rstrip("/") + "/")
    problem = entry_problem(uri) if is_local(uri) else None
    if problem is None:
      yield ImageRef(uri=uri, key=key)
    elif problem == DIRECTORY:
      self._directories.append(uri)
      self._skipped.inc()
    else:
      yield beam.pvalue.TaggedOutput(FAILED, _read_failure(uri, key, problem))

  def finish_bundle(self) -> None:
    _warn_directories(f"--manifest {self._manifest}", self._directories)
    self._directories = []


class KeyByOutputKeyFn(beam.DoFn):
  """ImageRef -> (key, ref), measuring what enters the de-duplicating shuffle (``transforms.accounting``)."""

  def __init__(self) -> None:
    self._refs = accounting.distribution(accounting.SHUFFLE_REFS)
    self._payloads = accounting.distribution(accounting.SHUFFLE_TFRECORD)

  def process(self, ref: Any) -> Iterator[Any]:
    self._refs.update(accounting.ref_bytes(ref))
    if ref.data is not None:
      self._payloads.update(len(ref.data))
    yield ref.key, ref


class ResolveDuplicateKeysFn(beam.DoFn):
  """(key, refs) -> the ref with the smallest URI; the rest become failures."""

  def process(self, keyed: Any) -> Iterator[Any]:
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

  def __init__(
    self,
    globs: Iterable[str],
    manifests: Iterable[str] = (),
    tfrecords: Iterable[str] = (),
    image_feature: str = "image/encoded",
    key_feature: str = "image/key",
  ) -> None:
    super().__init__()
    self._globs = list(globs)
    self._manifests = list(manifests)
    self._tfrecords = list(tfrecords)
    self._image_feature = image_feature
    self._key_feature = key_feature

  def expand(self, pbegin: Any) -> Any:
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
