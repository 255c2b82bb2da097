"""scripts/same_outputs.py: the refactor proof sees a changed byte or record and ignores run ids and clocks."""

import json
import shutil
import sys

from pipeline_helpers import REPO

sys.path.insert(0, f"{REPO}/scripts")
import same_outputs  # noqa: E402


def _run(root, run_id, seconds, pixels=b"\x89PNG mask"):
  (root / "masks").mkdir(parents=True)
  (root / "stats").mkdir()
  (root / "masks" / "a.png").write_bytes(pixels)
  record = {"key": "a", "pixels": 4, "classes": [{"id": 0, "pixels": 4}]}
  (root / "stats" / f"stats-{run_id}-00000-of-00001.jsonl").write_text(json.dumps(record) + "\n")
  summary = {"run_id": run_id, "start_time": seconds, "counts": {"read": 1}, "options": {"batch_size": 8}}
  (root / "summary.json").write_text(json.dumps(summary))
  (root / "report.html").write_text(f"<p>{seconds}</p>")


def test_the_same_results_under_other_run_ids_and_clocks_are_the_same(tmp_path):
  _run(tmp_path / "before", "20261202T100000Z-aaaa", 1.0)
  _run(tmp_path / "after", "20261202T110000Z-bbbb", 2.0)
  assert same_outputs.differences(str(tmp_path / "before"), str(tmp_path / "after")) == []


def test_a_changed_mask_byte_record_or_summary_value_is_reported(tmp_path):
  _run(tmp_path / "before", "r1", 1.0)
  _run(tmp_path / "after", "r2", 1.0, pixels=b"\x89PNG mask!")
  assert same_outputs.differences(str(tmp_path / "before"), str(tmp_path / "after")) == ["masks/a.png: bytes differ"]
  shutil.rmtree(tmp_path / "after")
  _run(tmp_path / "after", "r2", 1.0)
  summary = json.loads((tmp_path / "after" / "summary.json").read_text())
  summary["counts"]["read"], summary["options"]["tta"] = 2, "none"
  (tmp_path / "after" / "summary.json").write_text(json.dumps(summary))
  stats = next((tmp_path / "after" / "stats").iterdir())
  stats.write_text(stats.read_text().replace('"pixels": 4}', '"pixels": 3}'))
  found = same_outputs.differences(str(tmp_path / "before"), str(tmp_path / "after"), {"tta"})
  assert found == ["stats/stats.jsonl: records differ", "summary.json: counts.read differs: 1 -> 2"]
  assert "summary.json: options.tta only in after" in same_outputs.differences(
    str(tmp_path / "before"), str(tmp_path / "after")
  )
