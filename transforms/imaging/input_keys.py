"""The key of an input: the stable, safe relative path that names its outputs.

Separate from the Beam steps of ``transforms.read`` because the rule is shared
by everything that must find an input's outputs again (``transforms.truth``
matches truth masks by it) and needs no Beam: a key is a path relative to the
pattern's root (globs), the manifest's folder (manifests) or ``<shard>/<record
index>`` (TFRecords), always passed through ``sanitize_key`` so an output path
built from one can never leave ``OUT``.
"""

import hashlib
import posixpath
import re

SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_GLOB_CHARS = "*?["
_UNSAFE_CHARS = set('*?[]"<>|:')
_MAX_COMPONENT_BYTES = 200


def sanitize_key(raw: str) -> str:
  """A relative, '/'-separated key that cannot escape the output directory.

  Drops the URI scheme, empty and '.' components; '..' becomes '__'; control
  characters, wildcard and shell-hostile characters become '_'; components
  over 200 bytes are shortened with a hash suffix. Unicode and spaces stay.
  """
  text = SCHEME.sub("", raw.replace("\\", "/"))
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


def shard_name(path: str) -> str:
  """A TFRecord shard's file name without its extensions: the first part of its records' fallback keys."""
  shard = posixpath.basename(path)
  for suffix in (".gz", ".tfrecord", ".tfrecords"):
    shard = shard[: -len(suffix)] if shard.endswith(suffix) else shard
  return shard
