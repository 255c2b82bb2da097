"""One record file per run, and a folder whose records cover every mask exactly once.

Runs write ``stats-<run id>-…`` and ``failures-<run id>-…``; a finished run
removes from earlier runs' files only the records it replaced. The tests
read the folder the way a user does (every file under ``stats/``) and check
it against the masks on disk.
"""

import csv
import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pipeline_helpers import REPO, folder_records, read_outputs, scene

from pipeline.run import main
from pipeline.run_state import LOCK_FILE
from transforms.imaging.records import FAILURES_DIR, MASKS_DIR, STATS_DIR, SUMMARY_FILE
from transforms.record_folder import folder_files, supersede


def _images(folder, names, size=(40, 56)):
  folder.mkdir(parents=True, exist_ok=True)
  for index, name in enumerate(names):
    Image.fromarray(scene(*size, seed=index + len(str(folder)))).save(folder / name)
  return folder


def _argv(inputs, output, model, *flags):
  return ["--input", str(inputs / "*.png"), "--output", str(output), "--model", model, "--no_report", *flags]


def _masks(output):
  return sorted(name[: -len(".png")] for name in os.listdir(output / MASKS_DIR))


def _keys(rows):
  keys = [row["key"] for row in rows]
  assert len(keys) == len(set(keys)), f"duplicated records: {sorted(keys)}"
  return sorted(keys)


@pytest.mark.slow
def test_runs_keep_their_own_files_and_a_rerun_replaces_what_it_remade(tmp_path, fake_model):
  first = _images(tmp_path / "a", ["a0.png", "a1.png", "a2.png"])
  (first / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  second = _images(tmp_path / "b", ["b0.png", "b1.png"])
  out = tmp_path / "out"

  assert main(_argv(first, out, fake_model)) == 0
  summary_a, records_a, failures_a = read_outputs(str(out))
  assert main(_argv(second, out, fake_model)) == 0
  summary_b, records_b, _ = read_outputs(str(out))
  assert summary_a["run_id"] != summary_b["run_id"]
  for summary in (summary_a, summary_b):
    (stats,) = summary["outputs"]["stats"]
    assert os.path.basename(stats) == f"stats-{summary['run_id']}-00000-of-00001.jsonl"
  # Each run counts its own inputs; the folder holds both runs' records, one per mask.
  assert summary_b["counts"]["read"] == 2 and sorted(records_b) == ["b0.png", "b1.png"]
  assert len(folder_files(str(out))) == 2
  assert _keys(folder_records(str(out))) == _masks(out) == ["a0.png", "a1.png", "a2.png", "b0.png", "b1.png"]
  assert [f["key"] for f in folder_records(str(out), FAILURES_DIR)] == ["bad.png"] == [f["key"] for f in failures_a]

  # The broken input is fixed and the first set re-run: its old records and its old failure are replaced.
  _images(tmp_path / "fixed", ["bad.png"])
  os.replace(tmp_path / "fixed" / "bad.png", first / "bad.png")
  assert main(_argv(first, out, fake_model, "--skip_existing")) == 0
  summary_c, records_c, failures_c = read_outputs(str(out))
  assert summary_c["counts"]["reused_existing"] == 3 and failures_c == []
  assert (
    _keys(folder_records(str(out)))
    == _masks(out)
    == sorted(["a0.png", "a1.png", "a2.png", "bad.png"] + ["b0.png", "b1.png"])
  )
  assert sorted(map(os.path.basename, folder_files(str(out)))) == sorted(
    os.path.basename(path) for path in summary_b["outputs"]["stats"] + summary_c["outputs"]["stats"]
  )
  assert folder_records(str(out), FAILURES_DIR) == []
  assert records_c["a1.png"]["pixels"] == records_a["a1.png"]["pixels"]


def test_a_rerun_that_fails_an_image_keeps_the_record_of_its_earlier_mask(tmp_path, fake_model):
  inputs = _images(tmp_path / "in", ["x.png", "y.png"])
  out = tmp_path / "out"
  assert main(_argv(inputs, out, fake_model)) == 0
  (inputs / "y.png").write_bytes(b"broken now")
  assert main(_argv(inputs, out, fake_model)) == 0
  # y's mask from the first run is still there, so its record stays; its new failure is recorded too.
  assert _keys(folder_records(str(out))) == _masks(out) == ["x.png", "y.png"]
  assert [f["key"] for f in folder_records(str(out), FAILURES_DIR)] == ["y.png"]


def _write_jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(row) + "\n" for row in rows))
  return str(path)


def test_supersede_rewrites_csv_and_parquet_files_whole_and_keeps_what_it_cannot_read(tmp_path):
  stats = tmp_path / STATS_DIR
  stats.mkdir()
  rows = [{"uri": f"/in/{name}", "key": name, "pixels": 10 + index} for index, name in enumerate("pqrs")]
  with open(stats / "stats-old1-00000-of-00001.csv", "w", newline="") as handle:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["uri", "key", "pixels"])
    writer.writerows([[row["uri"], row["key"], row["pixels"]] for row in rows])
  pq.write_table(pa.Table.from_pylist(rows), stats / "stats-old2-00000-of-00001.parquet")
  (stats / "stats-old3-00000-of-00001.jsonl").write_text('{"uri": "/in/p", "key": "p"}\nnot json\n')
  failures = _write_jsonl(
    tmp_path / FAILURES_DIR / "failures-old1-00000-of-00001.jsonl", [{"uri": "/in/q", "key": "q"}]
  )
  own = _write_jsonl(
    stats / "stats-new-00000-of-00001.jsonl", [{"uri": "/in/p", "key": "p"}, {"uri": "/in/q", "key": "q"}]
  )

  assert supersede(str(tmp_path), [own], []) == 2 + 2 + 1 + 1
  with open(stats / "stats-old1-00000-of-00001.csv", newline="") as handle:
    assert list(csv.reader(handle)) == [["uri", "key", "pixels"], ["/in/r", "r", "12"], ["/in/s", "s", "13"]]
  assert pq.read_table(stats / "stats-old2-00000-of-00001.parquet").to_pylist() == rows[2:]
  assert (stats / "stats-old3-00000-of-00001.jsonl").read_text() == "not json\n"  # nobody's to drop
  assert not os.path.exists(failures)  # emptied: removed
  assert json.loads((stats / "stats-new-00000-of-00001.jsonl").read_text().splitlines()[0])["key"] == "p"
  assert sorted(os.listdir(stats)) == sorted(
    ["stats-new-00000-of-00001.jsonl"]
    + [f"stats-old{i}-00000-of-00001.{x}" for i, x in ((1, "csv"), (2, "parquet"), (3, "jsonl"))]
  )


@pytest.mark.slow
def test_a_forced_concurrent_run_deletes_none_of_the_other_runs_records(tmp_path, fake_model):
  """Run A is mid-way when run B takes its lock with --force_unlock: both finish and every mask keeps its record."""
  big = _images(tmp_path / "big", [f"big_{i:02d}.png" for i in range(48)], size=(512, 512))
  small = _images(tmp_path / "small", ["s0.png", "s1.png", "s2.png"])
  out = tmp_path / "out"
  first = subprocess.Popen(
    [sys.executable, "-m", "pipeline.run", *_argv(big, out, fake_model, "--batch_size", "1")],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and first.poll() is None:
      if (out / LOCK_FILE).exists():  # A holds the folder and starts its work
        break
      time.sleep(0.02)
    assert first.poll() is None, first.communicate()[1]
    assert main(_argv(small, out, fake_model, "--force_unlock")) == 0
    assert first.poll() is None, "run A ended before run B: nothing overlapped"
    _, err = first.communicate(timeout=300)
  finally:
    if first.poll() is None:
      first.kill()
      first.wait()
  assert first.returncode == 0, err
  with open(out / SUMMARY_FILE) as handle:
    assert json.load(handle)["counts"]["read"] in (48, 3)  # the last to finish; each counts only its own run
  assert _keys(folder_records(str(out))) == _masks(out)
  assert len(_masks(out)) == 51
