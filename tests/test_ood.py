"""The out-of-distribution flag: the rule on synthetic features, the default model's card
reference, and a real run in which real photographs are flagged and bundled samples are not."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from pipeline_helpers import REAL_MODEL, REPO, read_outputs

from pipeline import report
from transforms import record_files, statistics
from transforms.imaging import ood

BAND_STATS = {"mean": [100.0] * 3, "std": [40.0] * 3, "p01": [30.0, 40.0, 20.0], "p99": [230.0, 210.0, 190.0]}
CLASSES = [{"id": 0, "name": "a", "color": [0, 0, 0]}, {"id": 1, "name": "b", "color": [255, 255, 255]}]


def _rule():
  return ood.OodRule(BAND_STATS, min_confidence=0.9)


def test_features_are_band_moments_and_the_share_outside_the_training_range():
  pixels = np.full((64, 64, 3), 100, np.uint8)
  pixels[:32, :, 1] = 250  # half the pixels have band 1 above its p99
  low, high = _rule().range
  features = ood.image_features(pixels, low, high)
  assert features.band_mean == [100.0, 175.0, 100.0] and features.band_std == [0.0, 75.0, 0.0]
  assert features.outside_fraction == 0.5
  assert ood.image_features(pixels).outside_fraction is None  # no training range: nothing to compare
  assert ood.sample_stride(4096, 4096) == 32 and ood.sample_stride(100, 100) == 1


def test_each_check_flags_with_its_reason_and_in_distribution_passes():
  rule = _rule()
  inside = ood.OodFeatures([120.0, 110.0, 90.0], [30.0, 30.0, 30.0], 0.05)
  assert rule.check(inside, 0.95) == {
    "flagged": False,
    "reasons": [],
    "band_mean": inside.band_mean,
    "band_std": inside.band_std,
    "outside_fraction": 0.05,
  }
  low = rule.check(inside, 0.85)
  assert low["flagged"] and [r.split(":")[0] for r in low["reasons"]] == ["low_confidence"]
  spread = rule.check(inside._replace(outside_fraction=0.6), 0.95)
  assert [r.split(":")[0] for r in spread["reasons"]] == ["out_of_range"]
  assert rule.check(inside._replace(outside_fraction=ood.OUTSIDE_LIMIT), 0.95)["flagged"] is False
  dark = rule.check(inside._replace(band_mean=[20.0, 110.0, 10.0]), 0.95)
  assert dark["reasons"] == [
    "band_mean: band 0 mean 20.0 outside the training [30, 230]",
    "band_mean: band 2 mean 10.0 outside the training [20, 190]",
  ]


def test_a_card_without_reference_checks_nothing_and_says_so():
  rule = ood.OodRule.from_card({"metrics": {}})  # what model.wrap writes: no trained_on, no test metrics
  assert rule.range == (None, None)
  assert rule.check(ood.OodFeatures([0.0] * 3, [0.0] * 3, None), 0.01)["flagged"] is False
  described = rule.describe()
  assert described["min_confidence"] is None and described["outside_limit"] is None
  assert [line.split(":")[0] for line in described["unavailable"]] == ["low_confidence", "out_of_range, band_mean"]
  half = ood.OodRule.from_card({"metrics": {"test": {"image_confidence": {"p01": 0.8}}}})
  assert half.check(None, 0.7)["flagged"] and len(half.describe()["unavailable"]) == 1


def test_summary_counts_flagged_and_lists_the_smallest_keys_whatever_the_merge_order():
  combine = statistics.RunSummaryFn(CLASSES, ood_rule=_rule().describe())

  def record(key, flagged):
    return (
      "segmented",
      {
        "key": key,
        "pixels": 4,
        "area_unit": None,
        "classes": [
          {"pixels": 4, "area": None, "mean_confidence": 1.0},
          {"pixels": 0, "area": None, "mean_confidence": None},
        ],
        "ood": {"flagged": flagged, "reasons": ["x"] if flagged else []},
      },
    )

  keys = [f"k{i:02d}" for i in range(30)]
  accumulators = []
  for part in (keys[15:], keys[:15]):
    acc = combine.create_accumulator()
    for key in part:
      acc = combine.add_input(acc, record(key, int(key[1:]) % 3 != 0))
    accumulators.append(acc)
  acc = combine.add_input(combine.create_accumulator(), ("segmented", dict(record("old", True)[1], ood=None)))
  summary = combine.extract_output(combine.merge_accumulators(accumulators + [acc]))
  flagged = [key for key in keys if int(key[1:]) % 3 != 0]
  assert summary["ood"]["checked"] == 30 and summary["ood"]["flagged"] == 20
  assert summary["ood"]["flagged_keys"] == flagged[: ood.MAX_LISTED]
  assert summary["ood"]["min_confidence"] == 0.9 and summary["ood"]["rule"].startswith("flagged when")
  assert "ood" not in statistics.RunSummaryFn(CLASSES).extract_output(combine.create_accumulator())


def test_csv_carries_the_flag_and_the_report_reads_it_back():
  header = record_files._csv_header(CLASSES)
  assert header[-2:] == ["ood.flagged", "ood.reasons"]
  base = {
    "uri": "u",
    "key": "k",
    "mask": "m",
    "width": 1,
    "height": 1,
    "pixels": 1,
    "pixel_size": None,
    "pixel_size_source": None,
    "area_unit": None,
    "mean_confidence": 0.5,
    "model": {"name": "n", "version": "1"},
    "classes": [
      {"pixels": 1, "fraction": 1.0, "area": None, "mean_confidence": 0.5},
      {"pixels": 0, "fraction": 0.0, "area": None, "mean_confidence": None},
    ],
  }
  line = record_files._csv_line(
    dict(base, ood={"flagged": True, "reasons": ["low_confidence: x", "band_mean: y"]}), len(header)
  )
  assert line.endswith(",True,low_confidence: x; band_mean: y")
  row = dict(zip(header, line.split(",")))
  assert report.load.record_ood(row) == {"flagged": True, "reasons": ["low_confidence: x", "band_mean: y"]}
  assert record_files._csv_line(base, len(header)).endswith(",,")  # a record from before the check
  assert report.load.record_ood(dict(zip(header, record_files._csv_line(base, len(header)).split(",")))) is None


def test_default_card_records_what_the_model_was_trained_and_tested_on():
  with open(os.path.join(REAL_MODEL, "card.json")) as handle:
    card = json.load(handle)
  stats = card["trained_on"]["band_stats"]
  assert {"mean", "std", "p01", "p99", "sampled_pixels", "command"} <= set(stats)
  assert all(len(stats[key]) == card["input"]["channels"] for key in ("mean", "std", "p01", "p99"))
  assert all(low < mean < high for low, mean, high in zip(stats["p01"], stats["mean"], stats["p99"]))
  assert "model.check_data" in stats["command"] and card["trained_on"]["seed"] == 1
  test = card["metrics"]["test"]
  assert 0.9 < test["mean_confidence"] < 1.0
  quantiles = test["image_confidence"]
  assert quantiles["p01"] <= quantiles["p05"] <= quantiles["p50"] <= 1.0
  rule = ood.OodRule.from_card(card)
  assert rule.min_confidence == quantiles["p01"] and rule.describe()["unavailable"] == []


PHOTOS = ("astronaut", "rocket")
SAMPLES = ("farm_0001.png", "grey_0005.png")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  import skimage.data

  from pipeline.run import run

  root = tmp_path_factory.mktemp("ood")
  inputs = root / "in"
  inputs.mkdir()
  for name in SAMPLES:
    shutil.copy(os.path.join(REPO, "samples", "images", name), inputs / name)
  for name in PHOTOS:
    Image.fromarray(getattr(skimage.data, name)()).save(inputs / f"{name}.png")
  out = root / "out"
  run(
    ["--input", str(inputs / "*"), "--output", str(out), "--model", REAL_MODEL, "--runner=FnApiRunner"],
    save_main_session=False,
  ).wait_until_finish()
  return out


def test_photographs_are_flagged_and_bundled_samples_are_not(run_dir):
  summary, records, failures = read_outputs(str(run_dir))
  assert not failures and set(records) == set(SAMPLES) | {f"{name}.png" for name in PHOTOS}
  for key, record in records.items():
    block = record["ood"]
    assert block["flagged"] is (key not in SAMPLES), (key, block)
    assert bool(block["reasons"]) is block["flagged"]
    assert len(block["band_mean"]) == len(block["band_std"]) == 3 and 0 <= block["outside_fraction"] <= 1
  grey = records["grey_0005.png"]["ood"]["band_mean"]
  assert grey[0] == grey[1] == grey[2]  # decoded as the model takes it: grey replicated to RGB
  assert summary["ood"]["checked"] == 4 and summary["ood"]["flagged"] == 2
  assert summary["ood"]["flagged_keys"] == ["astronaut.png", "rocket.png"]
  assert summary["ood"]["min_confidence"] == summary["model"]["card"]["metrics"]["test"]["image_confidence"]["p01"]


def test_report_lists_the_flagged_images_with_reasons_and_thumbnails(run_dir):
  page = report.build_report(str(run_dir))
  section = page[page.index('<section id="ood">') :]
  section = section[: section.index("</section>")]
  listed = [row.split('"')[0] for row in section.split('<tr data-key="')[1:]]
  assert listed == ["astronaut.png", "rocket.png"]
  assert section.count('src="data:image/') == 2
  assert 'data-field="ood_flagged"><div class="v">2<' in section
  assert "out_of_range" in section or "low_confidence" in section


def test_evaluate_reports_confidence_and_the_card_metrics_carry_it(tmp_path):
  from model.artifact.export import card_metrics
  from model.data.make_dataset import make_dataset
  from model.training.evaluate import evaluate

  make_dataset(str(tmp_path), 5, {"train": 0, "val": 0, "test": 6}, 64)
  result = evaluate(REAL_MODEL, str(tmp_path), "test")
  quantiles = result["image_confidence"]
  assert 0.2 < quantiles["p01"] <= quantiles["p05"] <= quantiles["p50"] <= 1.0
  assert quantiles["p01"] <= result["mean_confidence"] <= 1.0
  metrics = card_metrics(result, "models/m")
  assert metrics["mean_confidence"] == result["mean_confidence"] and metrics["image_confidence"] == quantiles
  assert metrics["command"] == f"python -m model.evaluate --model models/m --data {tmp_path} --split test"


def test_export_takes_band_stats_from_the_training_run():
  from model.artifact.export import training_band_stats

  run = {"dataset": {"path": "data/cells"}, "data_check": {"band_stats": dict(BAND_STATS, sampled_pixels=9)}}
  stats = training_band_stats(run)
  assert stats["p01"] == BAND_STATS["p01"] and stats["sampled_pixels"] == 9
  assert stats["command"] == "python -m model.check_data data/cells --splits train --json"
  assert training_band_stats({}) is None  # a run.json from before check_data: no reference, no check


def test_tiled_prediction_stitches_per_pixel_values_beside_the_ids():
  from model.training.tiled import predict_image

  image = np.random.default_rng(0).integers(0, 256, (70, 90, 3)).astype(np.float32)
  # An identity "model": every tile returns its own first two bands, so the stitch must give them back.
  output = predict_image(lambda batch: batch[..., :2], image, tile_size=32, overlap=8, whole_pixels=0)
  np.testing.assert_array_equal(output, image[..., :2])


def test_bench_confusion_counts_each_check_once_per_image():
  from bench.ood import confusion

  records = [
    {"key": "photos/a.png", "ood": {"flagged": True, "reasons": ["band_mean: 0", "band_mean: 2"]}},
    {"key": "photos/b.png", "ood": {"flagged": False, "reasons": []}},
    {"key": "samples/c.png", "ood": {"flagged": True, "reasons": ["low_confidence: x"]}},
    {"key": "mosaics/d.png", "ood": {"flagged": False, "reasons": []}},
  ]
  result = confusion(records)
  assert result["sets"]["photos"]["reasons"] == {"band_mean": 1}
  assert result["precision"] == 0.5 and result["recall"] == 0.5
  assert result["sets"]["samples"]["flagged_keys"] == ["samples/c.png"]


def test_report_says_which_checks_a_card_without_reference_skips(tmp_path):
  rule = ood.OodRule.from_card({"metrics": {}}).describe()
  (tmp_path / "summary.json").write_text(json.dumps({"counts": {"read": 0, "segmented": 0, "failed": 0}, "ood": rule}))
  page = report.build_report(str(tmp_path))
  section = page[page.index('<section id="ood">') :]
  section = section[: section.index("</section>")]
  assert section.count('class="warn">Check not made: ') == 2
  assert "None" not in section and "Flagged images" not in section
