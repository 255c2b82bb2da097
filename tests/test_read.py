"""Tests of transforms/read.py and the modules split out of it: transforms/imaging/input_keys.py (output keys),
transforms/local_entries.py (local matching) and the shard listing that feeds transforms/tfrecord_shards.py."""

import errno
import os

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput

from pipeline.paths import matching_files
from transforms.read import MatchInputsFn, glob_root, key_for, match_local, sanitize_key


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


@pytest.mark.parametrize("pattern", ["*", "**", "**/*.png", "*.png", "a*/*.png", "?/*.png", "a/b/*", "a/x.png"])
def test_local_matching_keeps_beams_pattern_syntax(tmp_path, pattern):
  for relative in ("x.png", "y.jpg", "a/x.png", "a/b/z.png", "ab/x.png", "c/x.png", "a/b/c/d.png"):
    (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / relative).write_bytes(b"x")
  full = str(tmp_path / pattern)
  beam = sorted(m.path for result in FileSystems.match([full]) for m in result.metadata_list)
  assert sorted(entry.path for entry in match_local(full) if entry.problem is None) == beam
  assert sorted(matching_files(full)) == beam


def test_a_folder_that_cannot_be_listed_is_a_failure_where_it_could_hold_matches(tmp_path, monkeypatch):
  for relative in ("a/x.png", "private/y.png", "other/z.png"):
    (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / relative).write_bytes(b"x")
  real = os.scandir

  def scandir(path="."):
    if str(path).endswith("private"):
      raise PermissionError(errno.EACCES, "Permission denied", str(path))
    return real(path)

  monkeypatch.setattr(os, "scandir", scandir)
  entries = {entry.path: entry.problem for entry in match_local(str(tmp_path / "**/*.png"))}
  assert entries == {
    str(tmp_path / "a/x.png"): None,
    str(tmp_path / "other/z.png"): None,
    str(tmp_path / "private"): "cannot list the folder: permission denied",
  }
  # A pattern that cannot match below it never lists it.
  assert [entry.path for entry in match_local(str(tmp_path / "a/*.png"))] == [str(tmp_path / "a/x.png")]


def test_tfrecord_shards_follow_the_same_rule(tmp_path):
  (tmp_path / "a.tfrecord").write_bytes(b"")
  os.symlink("gone.tfrecord", tmp_path / "b.tfrecord")
  (tmp_path / "c.tfrecord").mkdir()
  outputs = list(MatchInputsFn("", shards=True).process(str(tmp_path / "*.tfrecord")))
  assert [entry.path for entry in outputs if not isinstance(entry, TaggedOutput)] == [str(tmp_path / "a.tfrecord")]
  failures = [output.value for output in outputs if isinstance(output, TaggedOutput)]
  assert [(f.key, f.stage, f.message) for f in failures] == [("b", "read", "dangling symbolic link to gone.tfrecord")]
