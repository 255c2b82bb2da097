"""bench.gpu_ceiling on CPU: the weights it carries rebuild the bundled model exactly, and its table says so."""

import json

import pytest

from bench import gpu_ceiling


def test_prepare_measure_table_round_trip(tmp_path):
  inputs = tmp_path / "inputs"
  gpu_ceiling.main(["prepare", "--out", str(inputs)])
  cells_path = tmp_path / "cells.json"
  gpu_ceiling.main(
    [
      "measure",
      "--inputs",
      str(inputs),
      "--out",
      str(cells_path),
      "--precisions",
      "float32,mixed_bfloat16",
      "--sizes",
      "64",
      "--batches",
      "2",
      "--min_seconds",
      "0",
      "--min_batches",
      "1",
      "--resident",
    ]
  )
  run = json.loads(cells_path.read_text())
  assert run["meta"]["backend"] == "tensorflow"
  by_precision = {cell["precision"]: cell for cell in run["cells"]}
  assert set(by_precision) == {"float32", "mixed_bfloat16"}
  # float32 on the rebuilt network answers exactly as the exported SavedModel does.
  assert by_precision["float32"]["agreement"] == 1.0
  assert by_precision["mixed_bfloat16"]["agreement"] > 0.98
  assert all(
    cell["images_per_s"] > 0 and cell["resident_images_per_s"] > 0 and cell["size"] == 64 and cell["batch"] == 2
    for cell in run["cells"]
  )

  doc = tmp_path / "PERFORMANCE_GPU.md"
  doc.write_text("# GPU\n\nintro\n<!-- gpu-ceiling:begin -->\nold\n<!-- gpu-ceiling:end -->\n\nafter\n")
  gpu_ceiling.main(["table", str(cells_path), "--out", str(doc), "--section"])
  text = doc.read_text()
  assert "old" not in text and text.startswith("# GPU\n\nintro\n") and text.rstrip().endswith("after")
  assert "| float32 | 64² | 2 |" in text and "1.0000 |" in text and "resident on device" in text
  merged = json.loads((tmp_path / "PERFORMANCE_GPU.json").read_text())
  assert merged["runs"][0]["cells"] == run["cells"]


def test_unknown_precision_is_refused(capsys):
  with pytest.raises(SystemExit) as exit_:
    gpu_ceiling.main(["measure", "--inputs", "x", "--out", "y", "--precisions", "float8"])
  assert exit_.value.code == 2
  assert "unknown precision ['float8']" in capsys.readouterr().err
