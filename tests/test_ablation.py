"""model.ablation: the checkerboard measure, the intervals, and the command on a tiny grid (writes, resumes)."""

import json
import os

import numpy as np
import pytest

from model import ablation, ablation_stats

TINY = [
  "--seeds",
  "0",
  "--variants",
  "fcn8s",
  "--upsampling",
  "bilinear",
  "resize",
  "--small_fraction",
  "0",
  "--image_size",
  "32",
  "--train_images",
  "16",
  "--val_images",
  "4",
  "--test_images",
  "4",
  "--epochs",
  "1",
  "--warmup_epochs",
  "0",
  "--batch_size",
  "8",
]


def _read(path):
  with open(path) as handle:
    return handle.read()


def test_checkerboard_is_zero_on_a_constant_map():
  assert ablation_stats.checkerboard_share(np.full((64, 64, 3), 0.4), 8) == 0.0


def test_checkerboard_is_one_on_a_checkerboard_at_the_stride():
  rows, cols = np.mgrid[0:64, 0:64]
  board = ((rows // 4 + cols // 4) % 2).astype(np.float64)  # period 8 in both directions
  assert ablation_stats.checkerboard_share(board, 8) == pytest.approx(1.0)
  # A faint checkerboard on smooth content raises the share by its own share of the variance.
  ramp = cols / 63.0
  plain = ablation_stats.checkerboard_share(np.stack([ramp, 1 - ramp], -1), 8)
  faint = ablation_stats.checkerboard_share(np.stack([ramp + 0.05 * board, 1 - ramp], -1), 8)
  assert faint > plain + 0.003


def test_checkerboard_is_low_on_a_smooth_ramp():
  rows, cols = np.mgrid[0:96, 0:96]
  ramp = (rows + cols) / 190.0
  share = ablation_stats.checkerboard_share(ramp, 8)
  assert share < 0.01
  assert ablation_stats.checkerboard_share(cols / 95.0, 8) == pytest.approx((8**2 - 1) / (96**2 - 1))


def test_t_interval_matches_the_textbook_value():
  mean, half = ablation_stats.t_interval([1.0, 2.0, 3.0])
  assert mean == pytest.approx(2.0)
  assert half == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)
  assert np.isnan(ablation_stats.t_interval([0.5])[1])


def test_tiny_grid_writes_table_and_figures_then_resumes_without_rerunning(tmp_path):
  out, figures = str(tmp_path / "ablation"), str(tmp_path / "img")
  first = ablation.main(["--out", out, "--figures", figures] + TINY)
  assert sorted(first["ran"]) == ["full_fcn8s_bilinear_seed0", "full_fcn8s_resize_seed0"]
  for name in ("ablation_miou.png", "ablation_curves.png", "ablation_checkerboard.png"):
    assert os.path.getsize(os.path.join(figures, name)) > 1000
  table = _read(os.path.join(out, "ablation.md"))
  assert "| full | fcn8s | resize |" in table and "reference" in table
  cell_path = os.path.join(out, "cells", "full_fcn8s_resize_seed0.json")
  cell = json.loads(_read(cell_path))
  assert len(cell["val_curve"]) == 1 and 0 <= cell["val_curve"][0]["val_mean_iou"] <= 1
  assert 0 <= cell["test_mean_iou"] <= 1 and 0 <= cell["checkerboard"]["share"] <= 1
  assert "--only full_fcn8s_resize_seed0" in cell["command"] and cell["seconds"] > 0
  summary = json.loads(_read(os.path.join(out, "ablation.json")))
  resize = next(row for row in summary["rows"] if row["upsampling"] == "resize")
  assert resize["paired_seeds"] == [0]
  stamp = os.path.getmtime(cell_path)

  second = ablation.main(["--out", out, "--figures", figures] + TINY)
  assert second["ran"] == [] and sorted(second["cached"]) == sorted(first["ran"])
  assert os.path.getmtime(cell_path) == stamp
