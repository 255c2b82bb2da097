"""--compare_to / python -m pipeline.drift: run-to-run drift of class shares and per-image fractions.

Two nights are segmented with the fake model, whose colour rule makes every
mask predictable (``reference_segment``): night 1 is mostly red, night 2
mostly green. Every number of the drift block is checked against a separate
computation from the input images (shares and fractions from the numpy
oracle, PSI with a plain loop, KS from ``scipy.stats.ks_2samp``).
"""

import datetime
import json
import math
import os

import numpy as np
import pytest
from fake_model import CLASSES, reference_segment
from PIL import Image
from scipy import stats as scipy_stats

from pipeline.drift import main as drift_main
from pipeline.post_run import drift
from pipeline.run import main
from pipeline.schedule import fill_template
from transforms.imaging.records import REPORT_FILE, STATS_DIR, SUMMARY_FILE

NAMES = [entry["name"] for entry in CLASSES]
SIZE = 20
# Red columns (left) of each 20x20 red|green image; the rest is green. Night 2 is shifted to green.
NIGHT_1 = [16, 15, 17, 16, 14, 15, 16, 17, 15, 16, 14, 16]
NIGHT_2 = [6, 5, 7, 6, 4, 5, 6, 7, 5, 20, 4, 6]


def _write_night(folder, red_columns):
  """Images of the night and their class fractions (from the fake model's numpy oracle)."""
  fractions = []
  for index, columns in enumerate(red_columns):
    pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
    pixels[:, :columns] = (200, 30, 30)
    pixels[:, columns:] = (30, 200, 30)
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(pixels).save(os.path.join(folder, f"img_{index:02d}.png"))
    ids = reference_segment(pixels)
    fractions.append([float(np.mean(ids == class_id)) for class_id in range(len(NAMES))])
  return np.array(fractions)


def _psi_by_hand(previous, current, bins=10, epsilon=1e-4):
  """PSI term by term: count each bin with comparisons, not np.histogram."""
  total = 0.0
  for index in range(bins):
    low, high = index / bins, (index + 1) / bins

    def share(values, low=low, high=high, last=index == bins - 1):
      inside = [v for v in values if low <= v < high or (last and v == 1.0)]
      return max(len(inside) / len(values), epsilon)

    expected, actual = share(previous), share(current)
    total += (actual - expected) * math.log(actual / expected)
  return total


def _segment(inputs, output, model, *flags):
  """The pipeline's command line (exit code) on inputs into output with model and any further flags."""
  return main(["--input", str(inputs), "--output", str(output), "--model", model, *flags])


def _nightly(root, model, date, *flags):
  """A scheduled night: ROOT/drops/{date} into ROOT/masks/{date}, the templates filled from --date."""
  return _segment(root / "drops" / "{date}" / "*.png", root / "masks" / "{date}", model, f"--date={date}", *flags)


@pytest.fixture(scope="module")
def nights(tmp_path_factory, fake_model):
  """Night 1 (2024-05-30) segmented with CSV stats into ROOT/masks/2024-05-30; night 2's inputs."""
  root = tmp_path_factory.mktemp("drift")
  first = _write_night(str(root / "drops" / "2024-05-30"), NIGHT_1)
  second = _write_night(str(root / "drops" / "2024-05-31"), NIGHT_2)
  assert _nightly(root, fake_model, "2024-05-30", "--stats_format=csv") == 0
  return root, first, second


@pytest.fixture(scope="module")
def drift_run(nights, fake_model):
  """Night 2 compared with night 1 through {prev_date}, with --fail_on_drift: exit 4 after every output."""
  root, _, _ = nights
  code = _nightly(
    root, fake_model, "2024-05-31", "--compare_to", str(root / "masks" / "{prev_date}"), "--fail_on_drift"
  )
  output = root / "masks" / "2024-05-31"
  return code, output, json.loads((output / SUMMARY_FILE).read_text())


def test_fail_on_drift_exits_4_after_writing_summary_and_report(drift_run, capsys):
  code, output, summary = drift_run
  assert code == drift.EXIT_CODE == 4
  assert summary["counts"]["segmented"] == len(NIGHT_2)
  html = (output / REPORT_FILE).read_text()
  assert 'id="drift"' in html and 'id="drift-table"' in html
  for name in ("red", "green"):
    assert f'<tr data-class="{name}" class="flagged">' in html
  assert '<tr data-class="blue">' in html


def test_drift_block_equals_an_independent_computation(nights, drift_run):
  root, first, second = nights
  _, _, summary = drift_run
  block = summary["drift"]
  assert block["compare_to"] == str(root / "masks" / "2024-05-30")
  assert block["images"] == {"previous": len(NIGHT_1), "current": len(NIGHT_2)}
  model = {"name": "fake-colour-rule", "version": "0.0.1"}
  assert block["models"] == {"previous": model, "current": model}
  assert block["threshold"] == 0.05 and block["psi_bins"] == 10 and block["psi_epsilon"] == 1e-4
  noise = scipy_stats.chi2.ppf(0.95, 9) * (1 / len(NIGHT_1) + 1 / len(NIGHT_2))
  assert block["psi_noise_level"] == pytest.approx(noise)
  assert [entry["name"] for entry in block["classes"]] == NAMES
  for index, entry in enumerate(block["classes"]):
    previous, current = first[:, index].mean(), second[:, index].mean()  # equal-sized images: mean = share
    assert entry["previous_share"] == pytest.approx(previous, abs=1e-12)
    assert entry["current_share"] == pytest.approx(current, abs=1e-12)
    assert entry["change_pp"] == pytest.approx(100 * (current - previous), abs=1e-9)
    assert entry["psi"] == pytest.approx(_psi_by_hand(first[:, index], second[:, index]), abs=1e-9)
    assert entry["ks"] == pytest.approx(scipy_stats.ks_2samp(first[:, index], second[:, index]).statistic)
  red, green = block["classes"][1], block["classes"][2]
  assert red["change_pp"] < -40 and green["change_pp"] > 40 and red["psi"] > 5
  assert block["flagged"] == ["red", "green"]
  assert red["flagged_by"] == green["flagged_by"] == ["share", "psi"]
  assert [entry["psi"] for entry in block["classes"] if entry["name"] in ("dark", "blue")] == [0.0, 0.0]


def test_drift_after_the_fact_gives_the_same_block(nights, drift_run, capsys):
  root, _, _ = nights
  _, output, summary = drift_run
  end_time = summary["end_time"]
  argv = [str(root / "masks" / "{date}"), "--compare_to", str(root / "masks" / "{prev_date}"), "--date", "2024-05-31"]
  assert drift_main(argv) == 0
  again = json.loads((output / SUMMARY_FILE).read_text())
  assert again["drift"] == summary["drift"] and again["end_time"] == end_time
  out = capsys.readouterr().out
  assert "Drift against" in out and "FLAGGED" in out
  assert drift_main(argv + ["--fail_on_drift", "--no_report"]) == 4
  assert "deconvseg drift: error: drift against" in capsys.readouterr().err


def test_a_failure_budget_exceeded_wins_over_drift(nights, fake_model, tmp_path, capsys, caplog):
  root, _, _ = nights
  drop = tmp_path / "drop"
  _write_night(str(drop), NIGHT_2[:4])
  (drop / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
  output = tmp_path / "out"
  code = _segment(
    drop / "*.png",
    output,
    fake_model,
    "--compare_to",
    str(root / "masks" / "2024-05-30"),
    "--fail_on_drift",
    "--max_failure_fraction=0.1",
  )
  err = capsys.readouterr().err
  assert code == 3, err
  assert "1 of 5 inputs failed" in err and "drift against" not in err
  assert "drift against" in caplog.text  # the drift is still reported, as a warning
  summary = json.loads((output / SUMMARY_FILE).read_text())
  assert summary["drift"]["flagged"] == ["red", "green"] and (output / REPORT_FILE).exists()


def test_missing_previous_run_warns_and_cannot_fail(nights, fake_model, tmp_path, caplog):
  root, _, _ = nights
  output = tmp_path / "out"
  code = _segment(
    root / "drops" / "2024-05-31" / "*.png",
    output,
    fake_model,
    "--compare_to",
    str(tmp_path / "never-ran"),
    "--fail_on_drift",
  )
  assert code == 0
  assert "drift" not in json.loads((output / SUMMARY_FILE).read_text())
  assert "does not exist (the first night of a schedule?)" in caplog.text
  assert 'id="drift"' not in (output / REPORT_FILE).read_text()


@pytest.mark.parametrize(
  "extra, message",
  [
    (["--compare_to", "PREV", "--drift_threshold", "1.5"], "--drift_threshold=1.5 is out of range"),
    (["--compare_to", "PREV", "--drift_threshold", "nan"], "--drift_threshold=nan is out of range"),
    (["--fail_on_drift"], "need --compare_to"),
    (["--compare_to", "EMPTY"], "is not a finished deconvseg run"),
    (["--compare_to", "OUT"], "is this run's --output"),
  ],
)
def test_bad_invocations_exit_2_before_any_work(nights, fake_model, tmp_path, capsys, extra, message):
  root, _, _ = nights
  (tmp_path / "empty").mkdir()
  output = tmp_path / "out"
  paths = {"PREV": str(root / "masks" / "2024-05-30"), "EMPTY": str(tmp_path / "empty"), "OUT": str(output)}
  code = _segment(root / "drops" / "2024-05-31" / "*.png", output, fake_model, *[paths.get(arg, arg) for arg in extra])
  err = capsys.readouterr().err
  assert code == 2 and message in err, err
  assert len(err.strip().splitlines()) == 1 and err.startswith("deconvseg: error: ")
  assert not output.exists()


def test_drift_cli_errors(nights, tmp_path, capsys):
  root, _, _ = nights
  assert drift_main([str(tmp_path), "--compare_to", str(root / "masks" / "2024-05-30")]) == 2
  assert "has no summary.json" in capsys.readouterr().err
  assert drift_main([str(root / "masks" / "2024-05-31"), "--compare_to", str(tmp_path / "gone")]) == 0


def test_psi_is_zero_for_identical_distributions_and_large_for_disjoint_ones():
  rng = np.random.default_rng(0)
  sample = rng.random(200)
  assert drift.population_stability_index(sample, sample) == 0.0
  assert drift.population_stability_index(sample, rng.permutation(sample)) == 0.0
  disjoint = drift.population_stability_index(np.full(50, 0.05), np.full(70, 0.95))
  assert disjoint == pytest.approx(2 * (1 - 1e-4) * math.log(1 / 1e-4))  # 18.4
  assert drift.population_stability_index([], sample) is None
  other = rng.beta(2, 5, 300)
  assert drift.population_stability_index(sample, other) == pytest.approx(_psi_by_hand(sample, other))


def test_ks_matches_scipy_and_noise_level_matches_the_chi_square_quantile():
  rng = np.random.default_rng(1)
  for size_a, size_b in ((30, 45), (200, 7), (5, 5)):
    first, second = rng.random(size_a).round(2), rng.beta(2, 3, size_b).round(2)  # with ties
    assert drift.ks_statistic(first, second) == pytest.approx(scipy_stats.ks_2samp(first, second).statistic)
  assert drift.ks_statistic([], [0.5]) is None
  assert drift.CHI2_95 == pytest.approx(scipy_stats.chi2.ppf(0.95, drift.PSI_BINS - 1))
  assert drift.psi_noise_level(20, 20) == pytest.approx(drift.CHI2_95 / 10)  # 1.69: small nights are noisy


def test_prev_date_placeholders_are_the_day_before():
  assert fill_template("m/{prev_date}/{date}", datetime.date(2024, 3, 1)) == "m/2024-02-29/2024-03-01"
  assert fill_template("{prev_yyyy}/{prev_mm}/{prev_dd}", datetime.date(2025, 1, 1)) == "2024/12/31"


def test_drift_on_gcs_with_copied_runs(nights, drift_run, gcs_emulator, gcs_bucket):
  """Both runs copied to a bucket: their summaries list the local stats paths, so the copies are globbed."""
  root, _, _ = nights
  _, output, summary = drift_run
  previous, current = f"gs://{gcs_bucket}/masks/2024-05-30", f"gs://{gcs_bucket}/masks/2024-05-31"
  gcs_emulator.upload_folder(str(root / "masks" / "2024-05-30"), previous)
  gcs_emulator.upload_folder(str(output), current)
  assert drift_main([current, "--compare_to", f"gs://{gcs_bucket}/masks/2024-05-29", "--no_report"]) == 0
  assert drift_main([current, "--compare_to", previous, "--no_report"]) == 0
  block = json.loads(gcs_emulator.download_prefix(current)[SUMMARY_FILE])["drift"]
  assert block["compare_to"] == previous and block["problems"] == []
  assert block["classes"] == summary["drift"]["classes"] and block["flagged"] == ["red", "green"]


def _hand_made_run(folder, fractions, names=("a", "b")):
  """summary.json and stats.jsonl of a run of 100-pixel images with these per-image class fractions."""
  os.makedirs(os.path.join(folder, STATS_DIR))
  pixels = np.rint(np.asarray(fractions, float) * 100).astype(int)
  with open(os.path.join(folder, STATS_DIR, "stats.jsonl"), "w") as handle:
    for index, row in enumerate(pixels):
      classes = [
        {"id": i, "name": name, "pixels": int(count), "fraction": count / 100}
        for i, (name, count) in enumerate(zip(names, row))
      ]
      handle.write(json.dumps({"key": f"{index}.png", "width": 10, "height": 10, "classes": classes}) + "\n")
  totals = pixels.sum(axis=0)
  summary = {
    "pixels": int(totals.sum()),
    "end_time": "2024-01-01T00:00:00Z",
    "classes": [
      {"id": i, "name": name, "pixels": int(count), "fraction": count / totals.sum()}
      for i, (name, count) in enumerate(zip(names, totals))
    ],
  }
  with open(os.path.join(folder, SUMMARY_FILE), "w") as handle:
    json.dump(summary, handle)
  return folder


@pytest.mark.parametrize("repeats, psi_flags", [(1, False), (20, True)])
def test_psi_flags_a_reshaped_distribution_only_above_sampling_noise(tmp_path, repeats, psi_flags):
  """Same pixel shares (a: 50 %); after, 2 in 10 images move off 50 %: PSI 1.4, noise 3.4 at 10 images."""
  before = _hand_made_run(str(tmp_path / "before"), [[0.5, 0.5, 0.0]] * (10 * repeats), names=("a", "b", "gone"))
  after = _hand_made_run(str(tmp_path / "after"), ([[0.5, 0.5]] * 8 + [[0.4, 0.6], [0.6, 0.4]]) * repeats)
  block = drift.compute_drift(after, before, threshold=0.05)
  entries = {entry["name"]: entry for entry in block["classes"]}
  assert list(entries) == ["a", "b", "gone"]  # a class only the earlier run had is still compared
  assert entries["a"]["change_pp"] == pytest.approx(0.0) and entries["gone"]["psi"] == 0.0
  after_a = ([0.5] * 8 + [0.4, 0.6]) * repeats
  assert entries["a"]["psi"] == pytest.approx(_psi_by_hand([0.5] * (10 * repeats), after_a))
  assert entries["a"]["psi"] == pytest.approx(1.425, abs=1e-3) and entries["a"]["psi"] > drift.PSI_THRESHOLD
  assert block["psi_noise_level"] == pytest.approx(drift.CHI2_95 * 2 / (10 * repeats))
  assert block["flagged"] == (["a", "b"] if psi_flags else [])
  assert entries["a"]["flagged_by"] == (["psi"] if psi_flags else [])


def test_the_launcher_writes_the_summary_once_with_io_and_drift(nights, fake_model, tmp_path, monkeypatch):
  """The job's summary.json is read back once, and the drift is computed from that copy, not from the file again."""
  from pipeline.post_run import summary as summary_file

  events = []  # in order: ("read", path) by the launcher, ("load", path) by the run-folder readers, ("write", doc)
  store, read_job, read_summary = summary_file.store_summary, summary_file.read_job_summary, drift.load.read_summary
  monkeypatch.setattr(
    summary_file, "store_summary", lambda output, doc: events.append(("write", doc)) or store(output, doc)
  )
  monkeypatch.setattr(
    summary_file, "read_job_summary", lambda output: events.append(("read", output)) or read_job(output)
  )
  monkeypatch.setattr(
    drift.load,
    "read_summary",
    lambda output, problems: events.append(("load", output)) or read_summary(output, problems),
  )
  root, _, _ = nights
  output = tmp_path / "again"
  previous = str(root / "masks" / "2024-05-30")
  code = _segment(root / "drops" / "2024-05-31" / "*.png", output, fake_model, "--compare_to", previous)
  assert code == 0
  summary = json.loads((output / SUMMARY_FILE).read_text())
  writes = [index for index, (kind, _) in enumerate(events) if kind == "write"]
  assert len(writes) == 1 and events[writes[0]][1] == summary
  before_write = events[: writes[0]]
  assert [event for event in before_write if event[1] == str(output)] == [("read", str(output))]
  assert ("load", previous) in before_write  # the earlier run is read from its folder; this one's drift from memory
  assert summary["drift"]["compare_to"] == previous and summary["io"]["images_read"] == 12
