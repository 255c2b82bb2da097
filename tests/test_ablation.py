"""model.ablation: the checkerboard measure, the intervals, and the command on a tiny grid (writes, resumes)."""

import json
import os

import numpy as np
import pytest

from model.ablation import cli as ablation
from model.ablation import stats as ablation_stats

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


@pytest.mark.slow
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


def test_the_decoder_table_pairs_seeds_against_fcn8s_and_scores_kept_masks():
  from model.ablation.report import decoder_table
  from model.ablation.stats import cell_boundary_f1, decoder_rows

  def record(variant, seed, miou):
    return {
      "id": f"full_{variant}_bilinear_seed{seed}",
      "regime": "full",
      "variant": variant,
      "upsampling": "bilinear",
      "seed": seed,
      "test_mean_iou": miou,
      "parameters": 100,
      "macs_per_pixel": 7000,
      "seconds": 60,
    }

  records = [record("fcn8s", s, 0.70 + 0.01 * s) for s in range(3)]
  records += [record("deconvnet", s, 0.72 + 0.01 * s + 0.001 * s * s) for s in range(3)]
  records.append(record("fcn32s", 0, 0.4))  # not a decoder of the comparison
  boundary = {r["id"]: 0.5 + (0.1 if r["variant"] == "deconvnet" else 0.0) for r in records}
  rows = decoder_rows(records, boundary)
  assert [row["variant"] for row in rows] == ["fcn8s", "deconvnet"]
  deconv = rows[1]
  assert deconv["test_mean_iou_difference"] == pytest.approx(np.mean([0.02, 0.021, 0.024]))
  assert deconv["test_mean_iou_paired_seeds"] == [0, 1, 2]
  assert deconv["test_boundary_f1_difference"] == pytest.approx(0.1)
  table = decoder_table(rows)
  assert "| fcn8s | 3 |" in table and "reference" in table and "+0.0217" in table

  truth = np.zeros((2, 16, 16), np.uint8)
  truth[:, 4:12, 4:12] = 1
  assert cell_boundary_f1(truth.copy(), truth, 2) == 1.0
  # within the 2 px tolerance a shift costs nothing; beyond it, the vertical edges miss
  scores = [cell_boundary_f1(np.roll(truth, shift, axis=2), truth, 2) for shift in (1, 3)]
  assert scores[0] == 1.0 and 0 < scores[1] < 1.0


def _own_record(variant, seed, mean_iou, nucleus):
  return {
    "id": f"{variant}_seed{seed}",
    "variant": variant,
    "seed": seed,
    "train_seconds": 60.0,
    "mean_iou": mean_iou,
    "mean_boundary_f1": mean_iou - 0.1,
    "per_class_iou": {"background": 0.95, "nucleus": nucleus},
    "per_class_boundary_f1": {"background": 0.9, "nucleus": nucleus - 0.1},
  }


def test_the_own_data_table_pairs_every_score_by_seed_against_fcn8s():
  from model.ablation import own_data as ablation_own_data

  records = [
    _own_record("fcn8s", 0, 0.90, 0.85),
    _own_record("fcn8s", 1, 0.91, 0.86),
    _own_record("fcn2s", 0, 0.93, 0.90),
    _own_record("fcn2s", 1, 0.95, 0.92),
    _own_record("fcn2s", 2, 0.99, 0.99),  # no FCN-8s run with seed 2: not paired
  ]
  table = {(row["variant"], row["score"]): row for row in ablation_own_data.rows(records)}
  nucleus = table[("fcn2s", "iou nucleus")]
  assert nucleus["paired_seeds"] == [0, 1]
  assert nucleus["difference"] == pytest.approx(0.055)
  assert nucleus["mean"] == pytest.approx((0.90 + 0.92 + 0.99) / 3)
  assert table[("fcn2s", "mean_iou")]["difference"] == pytest.approx(0.035)
  assert "difference" not in table[("fcn8s", "mean_iou")]
  text = ablation_own_data.markdown(ablation_own_data.rows(records))
  assert "| fcn8s | iou nucleus | 2 | 0.8550 ±" in text and "reference" in text and "(n=2)" in text


@pytest.mark.slow
def test_the_own_data_grid_trains_with_model_train_and_resumes(tmp_path):
  from model.data.make_dataset import make_dataset

  data, out = str(tmp_path / "data"), str(tmp_path / "grid")
  make_dataset(data, 5, {"train": 8, "val": 2, "test": 2}, 32)
  argv = ["--data", data, "--variants", "fcn8s", "fcn2s", "--seeds", "0", "--out", out]
  # A narrow network and a few steps an epoch (model.train's defaults: width 32, at least 50): this checks the
  # grid's plumbing, not what the cells learn.
  train_args = "--epochs 2 --warmup_epochs 1 --image_size 32 --batch_size 4 --min_steps_per_epoch 5 --width 8"
  argv += ["--train_args", train_args]
  first = ablation.main(argv)
  assert sorted(first["ran"]) == ["fcn2s_seed0", "fcn8s_seed0"]
  cell = json.loads(_read(os.path.join(out, "cells", "fcn2s_seed0.json")))
  assert "--variant fcn2s --seed 0" in cell["command"] and "--epochs 2" in cell["command"]
  assert 0 <= cell["mean_iou"] <= 1 and cell["train_seconds"] > 0
  assert len(cell["per_class_iou"]) == 5
  assert os.path.exists(os.path.join(out, "runs", "fcn2s_seed0", "best.keras"))
  table = _read(os.path.join(out, "decoders.md"))
  assert "| fcn2s | mean_boundary_f1 | 1 |" in table and "(n=1)" in table
  second = ablation.main(argv)
  assert second["ran"] == [] and sorted(second["cached"]) == sorted(first["ran"])
  with pytest.raises(SystemExit):
    ablation.main(["--data", str(tmp_path / "missing"), "--out", out])
