"""Beam's gs:// filesystem against the real gcp-storage-emulator, with no credential delay."""

import json
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import apache_beam as beam
import pytest
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from tests.gcs import GcsEmulator, read_local_tree

# A process that needs ~20 s for google.auth.default() retries would blow this.
SUBPROCESS_BUDGET_S = 10.0


def test_filesystems_create_match_open_rename_delete(gcs_bucket):
  base = "gs://%s/fs" % gcs_bucket
  with FileSystems.create(base + "/a.txt") as handle:
    handle.write(b"alpha")
  with FileSystems.create(base + "/b.txt") as handle:
    handle.write(b"bravo!")

  matched = FileSystems.match([base + "/*.txt"])[0].metadata_list
  assert sorted((m.path, m.size_in_bytes) for m in matched) == [(base + "/a.txt", 5), (base + "/b.txt", 6)]
  with FileSystems.open(base + "/b.txt") as handle:
    assert handle.read() == b"bravo!"

  FileSystems.rename([base + "/a.txt", base + "/b.txt"], [base + "/moved/a.txt", base + "/moved/b.txt"])
  assert not FileSystems.exists(base + "/a.txt")
  with FileSystems.open(base + "/moved/a.txt") as handle:
    assert handle.read() == b"alpha"

  FileSystems.delete([base + "/moved/a.txt", base + "/moved/b.txt"])
  assert FileSystems.match([base + "/**"])[0].metadata_list == []


def test_write_to_text_and_read_matches_in_a_pipeline(gcs_bucket):
  base = "gs://%s/pipeline" % gcs_bucket
  options = PipelineOptions(["--runner=FnApiRunner"])
  with beam.Pipeline(options=options) as p:
    _ = (
      p
      | "Lines" >> beam.Create(["one", "two", "three"])
      | "Write" >> beam.io.WriteToText(base + "/lines", file_name_suffix=".txt", num_shards=2)
    )

  shards = sorted(m.path for m in FileSystems.match([base + "/lines-*.txt"])[0].metadata_list)
  assert shards == [base + "/lines-00000-of-00002.txt", base + "/lines-00001-of-00002.txt"]

  with beam.Pipeline(options=options) as p:
    lines = (
      p
      | "Match" >> fileio.MatchFiles(base + "/lines-*.txt")
      | "Open" >> fileio.ReadMatches()
      | "Split" >> beam.FlatMap(lambda f: f.read_utf8().splitlines())
    )
    assert_that(lines, equal_to(["one", "two", "three"]))


def test_subprocess_matches_gs_without_credential_delay(gcs_emulator, gcs_bucket):
  gcs_emulator.client().bucket(gcs_bucket).blob("sub/x.bin").upload_from_string(b"12345")
  script = textwrap.dedent("""
        import json, sys
        from apache_beam.io.filesystems import FileSystems
        found = FileSystems.match([sys.argv[1]])[0].metadata_list
        print(json.dumps([[m.path, m.size_in_bytes] for m in found]))
    """)
  started = time.monotonic()
  done = subprocess.run(
    [sys.executable, "-c", script, "gs://%s/sub/*" % gcs_bucket],
    env=gcs_emulator.subprocess_env(),
    capture_output=True,
    text=True,
    timeout=120,
  )
  elapsed = time.monotonic() - started
  assert done.returncode == 0, done.stderr
  assert json.loads(done.stdout) == [["gs://%s/sub/x.bin" % gcs_bucket, 5]]
  assert elapsed < SUBPROCESS_BUDGET_S, "subprocess took %.1f s" % elapsed
  assert "Unable to find default credentials" not in done.stderr


@pytest.mark.slow
def test_multi_processing_workers_read_and_write_gs(gcs_emulator, gcs_bucket):
  """FnApiRunner worker processes inherit the emulator environment and skip the lookup."""
  base = "gs://%s/mp" % gcs_bucket
  bucket = gcs_emulator.client().bucket(gcs_bucket)
  for name in ("a", "b", "c", "d"):
    bucket.blob("mp/in/%s.txt" % name).upload_from_string(name * 3)
  options = PipelineOptions(
    ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
  )
  started = time.monotonic()
  with beam.Pipeline(options=options) as p:
    _ = (
      p
      | fileio.MatchFiles(base + "/in/*.txt")
      | fileio.ReadMatches()
      | beam.Map(lambda f: f.read_utf8().upper())
      | beam.io.WriteToText(base + "/out/upper", num_shards=1)
    )
  elapsed = time.monotonic() - started
  written = gcs_emulator.download_prefix(base + "/out")
  assert list(written) == ["upper-00000-of-00001"]
  assert sorted(written["upper-00000-of-00001"].decode().split()) == ["AAA", "BBB", "CCC", "DDD"]
  assert elapsed < 30, "multi-processing run took %.1f s" % elapsed


def test_upload_folder_and_download_prefix_round_trip(gcs_emulator, gcs_bucket, tmp_path):
  source = tmp_path / "src"
  (source / "nested" / "deeper").mkdir(parents=True)
  (source / "top.bin").write_bytes(bytes(range(256)))
  (source / "nested" / "deeper" / "leaf.txt").write_text("leaf")

  uploaded = gcs_emulator.upload_folder(source, "gs://%s/copy/" % gcs_bucket)
  assert uploaded == ["gs://%s/copy/nested/deeper/leaf.txt" % gcs_bucket, "gs://%s/copy/top.bin" % gcs_bucket]
  assert gcs_emulator.download_prefix("gs://%s/copy" % gcs_bucket) == read_local_tree(source)

  mirror = tmp_path / "mirror"
  gcs_emulator.download_to_folder("gs://%s/copy" % gcs_bucket, mirror)
  assert read_local_tree(mirror) == read_local_tree(source)


def test_emulator_stops_and_releases_its_port():
  emulator = GcsEmulator().start()
  endpoint = emulator.endpoint
  with urllib.request.urlopen(endpoint + "/storage/v1/b?project=x", timeout=5) as reply:
    assert reply.status == 200
  emulator.stop()
  try:
    urllib.request.urlopen(endpoint + "/storage/v1/b?project=x", timeout=2)
  except (urllib.error.URLError, ConnectionError):
    pass
  else:
    raise AssertionError("emulator still answering at %s after stop()" % endpoint)
