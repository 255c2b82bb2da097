"""--truth: per-image and run-level agreement with ground-truth masks, in the run and after it.

The fake model's colour rule makes every mask exactly predictable
(``reference_segment``), so truth masks are written as that prediction with
known pixels changed, and every number is checked against a separate numpy
computation and against ``model/metrics.py`` (the model half's metrics).
"""

import json
import os
import re
import shutil

import numpy as np
import pytest
from fake_model import CLASSES, reference_segment
from PIL import Image
from pipeline_helpers import check_accounting, read_outputs, run_pipeline, scene

from model.metrics import confusion_matrix as model_confusion
from model.metrics import segmentation_metrics
from model.training.boundary import boundary_f1
from pipeline.errors import OptionsError
from transforms import truth as truth_lib
from transforms.imaging.records import MASKS_DIR, REPORT_FILE, SUMMARY_FILE

NAMES = [c["name"] for c in CLASSES]
# name: (width, height, truth to write: "exact" | "edited" | "palette" | "small" | None)
IMAGES = {
  "a.png": (40, 30, "edited"),
  "sub/b.png": (50, 20, "palette"),
  "c.png": (16, 16, None),
  "d.png": (20, 20, "small"),
  "e.png": (24, 18, "exact"),
}


def _truth_for(prediction, kind, seed):
  """The truth mask written for an image, and the labels that count (255 = ignore)."""
  labels = prediction.astype(np.uint8).copy()
  if kind in ("edited", "palette"):
    rng = np.random.default_rng(seed)
    changed = rng.random(labels.shape) < 0.3
    labels[changed] = rng.integers(0, len(CLASSES), int(changed.sum()))
    labels[:2, :] = truth_lib.IGNORE_LABEL  # ignore pixels: left out of every count
  return labels


def _save_truth(path, labels, kind):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if kind == "palette":  # a palette PNG counts by its indices, whatever its colours
    image = Image.fromarray(labels, "L").convert("P")
    image.putpalette([255 - v for v in range(256)] * 3)
    image.save(path)
  elif kind == "small":
    Image.fromarray(labels[:-3]).save(path)
  else:
    Image.fromarray(labels).save(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Images, their truth masks ('truth/<stem>.png', an orphan among them) and the expected labels."""
  root = tmp_path_factory.mktemp("truth_corpus")
  expected = {}
  for index, (name, (width, height, kind)) in enumerate(IMAGES.items()):
    pixels = scene(height, width, seed=index)
    path = root / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    prediction = reference_segment(pixels)
    if kind:
      labels = _truth_for(prediction, kind, index)
      _save_truth(str(root / "truth" / (os.path.splitext(name)[0] + ".png")), labels, kind)
      expected[name] = (prediction, labels, kind)
  Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "truth" / "orphan.png")
  return root, expected


def _numpy_confusion(labels, prediction):
  """Pixel by pixel, independent of bincount tricks."""
  matrix = np.zeros((len(NAMES), len(NAMES)), np.int64)
  for true_id in range(len(NAMES)):
    for predicted_id in range(len(NAMES)):
      matrix[true_id, predicted_id] = int(np.sum((labels == true_id) & (prediction == predicted_id)))
  return matrix


def _expected_numbers(expected):
  """{key: confusion} for images with a usable truth, and the run's summed confusion."""
  per_image = {
    key: _numpy_confusion(labels, prediction) for key, (prediction, labels, kind) in expected.items() if kind != "small"
  }
  return per_image, sum(per_image.values())


def test_metrics_agree_with_the_model_half():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 5, (40, 50))
  labels[rng.random(labels.shape) < 0.1] = 255
  predicted = rng.integers(0, 4, (40, 50))  # class 4 never predicted; present in truth
  confusion = truth_lib.confusion_matrix(labels, predicted, 5)
  np.testing.assert_array_equal(confusion, model_confusion(labels, predicted, 5))
  assert confusion.sum() == int((labels != 255).sum())
  names = list("abcde")
  ours, theirs = truth_lib.metrics(confusion, names), segmentation_metrics(confusion, names)
  for field in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
    assert ours[field] == pytest.approx(theirs[field], abs=1e-12), field
  assert ours["per_class_iou"] == pytest.approx(theirs["per_class_iou"])
  absent = truth_lib.metrics(np.diag([3, 0, 2]), ["x", "y", "z"])  # y in neither truth nor prediction
  assert absent["per_class_iou"] == {"x": 1.0, "y": None, "z": 1.0} and absent["mean_iou"] == 1.0
  empty = truth_lib.metrics(np.zeros((2, 2)), ["x", "y"])
  assert empty["pixel_accuracy"] is None and empty["mean_iou"] is None


def test_read_truth_refuses_what_cannot_be_compared(tmp_path):
  ok = tmp_path / "ok.png"
  Image.fromarray(np.array([[0, 1], [255, 3]], np.uint8)).save(ok)
  np.testing.assert_array_equal(truth_lib.read_truth(str(ok), 2, 2, 4), [[0, 1], [255, 3]])
  with pytest.raises(truth_lib.TruthError, match=r"ok.png is 2x2 but the image is 3x2"):
    truth_lib.read_truth(str(ok), 3, 2, 4)
  with pytest.raises(truth_lib.TruthError, match=r"has class id 3 but the model has 3 classes"):
    truth_lib.read_truth(str(ok), 2, 2, 3)
  rgb = tmp_path / "rgb.png"
  Image.new("RGB", (2, 2)).save(rgb)
  with pytest.raises(truth_lib.TruthError, match="is RGB; it must hold one class id per pixel"):
    truth_lib.read_truth(str(rgb), 2, 2, 4)
  junk = tmp_path / "junk.png"
  junk.write_bytes(b"not a png")
  with pytest.raises(truth_lib.TruthError, match="cannot be decoded"):
    truth_lib.read_truth(str(junk), 2, 2, 4)
  assert truth_lib.truth_stem("/t/x/a.b.png", "/t/**/*.png") == "x/a.b"


def test_truth_matching_nothing_is_refused_before_work(corpus, fake_model, tmp_path):
  root, _ = corpus
  with pytest.raises(OptionsError, match=r"--truth '.*nothing/\*\.png' matches no files"):
    run_pipeline(root / "in" / "**", tmp_path / "out", fake_model, "--truth", str(root / "nothing" / "*.png"))
  (root / "dup").mkdir(exist_ok=True)
  for suffix in (".png", ".tif"):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(root / "dup" / f"a{suffix}")
  with pytest.raises(OptionsError, match="both match images keyed 'a'"):
    run_pipeline(root / "in" / "**", tmp_path / "out", fake_model, "--truth", str(root / "dup" / "*"))
  assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def truth_run(corpus, fake_model, tmp_path_factory):
  root, expected = corpus
  output = tmp_path_factory.mktemp("truth_run") / "out"
  run_pipeline(
    root / "in" / "**",
    output,
    fake_model,
    "--truth",
    str(root / "truth" / "*.png"),
    str(root / "truth" / "**" / "*.png"),
    "--tile_size=32",
    "--tile_overlap=8",
    "--whole_image_pixels=600",
  )
  return output


def test_run_records_and_summary_equal_numpy(corpus, truth_run):
  root, expected = corpus
  summary, records, failures = read_outputs(str(truth_run))
  check_accounting(summary, records, failures, expected_read=len(IMAGES))
  per_image, total = _expected_numbers(expected)
  assert set(records) == set(IMAGES) - {"d.png"}
  for key, record in records.items():
    if key not in per_image:
      assert record["truth"] is None, key
      continue
    truth, confusion = record["truth"], per_image[key]
    prediction, labels, _ = expected[key]
    assert truth["uri"] == str(root / "truth" / (os.path.splitext(key)[0] + ".png"))
    assert truth["confusion"] == confusion.tolist(), key
    assert truth["ignored"] == int((labels == 255).sum()) and truth["pixels"] == int((labels != 255).sum())
    assert truth["pixel_accuracy"] == pytest.approx(float(np.mean(labels[labels != 255] == prediction[labels != 255])))
    reference = segmentation_metrics(confusion, NAMES)
    assert truth["mean_iou"] == pytest.approx(reference["mean_iou"])
    assert truth["per_class_iou"] == pytest.approx(reference["per_class_iou"])
  assert records["e.png"]["truth"]["pixel_accuracy"] == 1.0

  assert [(f["key"], f["stage"]) for f in failures] == [("d.png", "truth")]
  assert "is 20x17 but the image is 20x20" in failures[0]["message"]
  assert summary["failed_by_stage"] == {"truth": 1}
  assert not (truth_run / MASKS_DIR / "d.png.png").exists()  # a failed image leaves no mask

  run_truth = summary["truth"]
  assert run_truth["confusion"] == total.tolist()
  reference = segmentation_metrics(total, NAMES)
  for field in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "per_class_iou"):
    assert run_truth[field] == pytest.approx(reference[field]), field
  assert (
    run_truth["images_with_truth"],
    run_truth["images_without_truth"],
    run_truth["truth_files_unmatched"],
    run_truth["images_failed"],
  ) == (3, 1, 1, 1)
  assert summary["options"]["truth"] == [str(root / "truth" / "*.png"), str(root / "truth" / "**" / "*.png")]


def _without(block, *fields):
  return {k: v for k, v in block.items() if k not in fields}


# What pipeline.evaluate adds to the run's truth blocks (the run itself does not score boundaries).
IMAGE_BF_FIELDS = ("mean_boundary_f1", "per_class_boundary_f1")
RUN_BF_FIELDS = IMAGE_BF_FIELDS + ("boundary_f1_images", "boundary_tolerance")


def test_evaluate_after_the_run_gives_the_same_numbers(corpus, truth_run, tmp_path, capsys):
  from pipeline import evaluate

  root, expected = corpus
  summary, records, _ = read_outputs(str(truth_run))
  truth_run = shutil.copytree(truth_run, tmp_path / "moved")  # also: a run directory moved after the run
  patterns = [str(root / "truth" / "*.png"), str(root / "truth" / "**" / "*.png")]
  assert evaluate.main([str(truth_run), "--truth", *patterns]) == 0
  printed = capsys.readouterr().out
  assert "3 images with truth, 1 without, 1 truth files matching no image" in printed
  evaluation = json.loads((truth_run / "evaluation.json").read_text())
  # d.png failed in the run (stage truth): it has no mask, so only the run counts it as failed.
  assert _without(evaluation["truth"], "images_failed", *RUN_BF_FIELDS) == _without(summary["truth"], "images_failed")
  assert evaluation["truth"]["images_failed"] == 0 and evaluation["failures"] == []
  assert {
    entry["key"]: entry["truth"] and _without(entry["truth"], *IMAGE_BF_FIELDS) for entry in evaluation["images"]
  } == {key: record["truth"] for key, record in records.items()}
  assert evaluation["run_end_time"] == summary["end_time"]

  # The boundary F-score: per image as model/training/boundary.py computes it on the expected masks, per class
  # the mean over the images where it is defined, and the mean over the classes that have one.
  per_image = {}
  for entry in evaluation["images"]:
    if entry["truth"]:
      prediction, labels, _ = expected[entry["key"]]
      scores = boundary_f1(labels, prediction, len(NAMES))
      per_image[entry["key"]] = scores
      assert entry["truth"]["per_class_boundary_f1"] == pytest.approx(
        {name: None if np.isnan(value) else value for name, value in zip(NAMES, scores)}
      )
      assert entry["truth"]["mean_boundary_f1"] == pytest.approx(np.nanmean(scores))
  exact = next(entry for entry in evaluation["images"] if entry["key"] == "e.png")["truth"]  # truth = mask
  assert exact["mean_boundary_f1"] == 1.0 and set(exact["per_class_boundary_f1"].values()) <= {1.0, None}
  block = evaluation["truth"]
  stacked = np.array(list(per_image.values()))
  defined = ~np.isnan(stacked)
  expected_means = [stacked[defined[:, i], i].mean() if defined[:, i].any() else None for i in range(len(NAMES))]
  assert block["per_class_boundary_f1"] == pytest.approx(dict(zip(NAMES, expected_means)))
  assert block["boundary_f1_images"] == dict(zip(NAMES, defined.sum(axis=0).tolist()))
  assert block["mean_boundary_f1"] == pytest.approx(np.mean([v for v in expected_means if v is not None]))
  assert block["boundary_tolerance"] == 2.0
  assert 0.0 < block["mean_boundary_f1"] < 1.0
  assert f"mean boundary F-score {block['mean_boundary_f1']:.4f} (tolerance 2 px)" in printed
  assert re.search(rf"^{NAMES[0]}\s+\S+\s+\S+$", printed, re.M) and "BF" in printed
  report = (truth_run / REPORT_FILE).read_text()
  assert 'data-field="mean_boundary_f1"' in report and '<th class="num">boundary F-score</th>' in report

  # A wider tolerance forgives more: never a lower score.
  assert evaluate.main([str(truth_run), "--truth", *patterns, "--bf_tolerance", "5", "--no_report"]) == 0
  wider = json.loads((truth_run / "evaluation.json").read_text())["truth"]
  assert wider["boundary_tolerance"] == 5.0 and wider["mean_boundary_f1"] >= block["mean_boundary_f1"]


def test_report_shows_the_heatmap_and_the_worst_images_first(corpus, truth_run):
  from pipeline.report import build_report

  _, records = read_outputs(str(truth_run))[:2]
  document = build_report(str(truth_run))
  heatmap = re.search(r'<table id="confusion-matrix".*?</table>', document, re.S).group(0)
  assert re.findall(r'<th scope="col">([^<]+)</th>', heatmap) == NAMES
  assert re.findall(r'<th scope="row">([^<]+)</th>', heatmap) == NAMES
  total = np.array(json.loads((truth_run / SUMMARY_FILE).read_text())["truth"]["confusion"])
  counts = [int(v) for v in re.findall(r'data-count="(\d+)"', heatmap)]
  assert counts == total.ravel().tolist()
  shares = [float(v) for v in re.findall(r'data-share="([\d.]+)"', heatmap)]
  assert shares[0] == pytest.approx(total[0, 0] / total[0].sum(), abs=1e-4)
  worst = re.search(r'<table id="worst-images".*?</table>', document, re.S).group(0)
  listed = re.findall(r'<tr data-key="([^"]+)">', worst)
  scored = sorted(
    (r["truth"]["mean_iou"], r["truth"]["pixel_accuracy"], key) for key, r in records.items() if r["truth"]
  )
  assert listed == [key for _, _, key in scored] and listed[-1] == "e.png"
  assert 'href="masks/a.png.png"' in worst and "data:image/jpeg;base64," in worst
  assert "Scored during the run (--truth)." in document


@pytest.mark.parametrize("stats_format", ["csv"])
def test_evaluate_reads_csv_stats_and_re_renders_the_report(corpus, fake_model, tmp_path, stats_format):
  from pipeline import evaluate

  root, expected = corpus
  output = tmp_path / "out"
  run_pipeline(root / "in" / "**", output, fake_model, f"--stats_format={stats_format}")
  assert "confusion-matrix" not in (output / REPORT_FILE).read_text()
  assert evaluate.main([str(output), "--truth", str(root / "truth")]) == 0
  evaluation = json.loads((output / "evaluation.json").read_text())
  per_image, _ = _expected_numbers(expected)
  scored = {entry["key"]: entry["truth"]["confusion"] for entry in evaluation["images"] if entry["truth"]}
  assert scored == {key: confusion.tolist() for key, confusion in per_image.items()}
  assert [(f["key"], f["stage"]) for f in evaluation["failures"]] == [("d.png", "truth")]
  assert evaluation["truth"]["images_failed"] == 1
  document = (output / REPORT_FILE).read_text()
  assert "pipeline.evaluate" in document and 'id="confusion-matrix"' in document
  assert re.search(r'<table id="worst-images".*?data-key="', document, re.S)


def test_skip_existing_scores_reused_masks_from_the_stored_mask(corpus, fake_model, tmp_path):
  root, expected = corpus
  output = tmp_path / "out"
  run_pipeline(root / "in" / "**", output, fake_model)  # a first run without --truth
  run_pipeline(root / "in" / "**", output, fake_model, "--skip_existing", "--truth", str(root / "truth") + "/")
  summary, records, failures = read_outputs(str(output))
  check_accounting(summary, records, failures, expected_read=len(IMAGES))
  assert summary["counts"]["reused_existing"] == len(IMAGES) - 1  # d.png: reused, then failed at truth
  per_image, total = _expected_numbers(expected)
  assert {k: r["truth"]["confusion"] for k, r in records.items() if r["truth"]} == {
    k: c.tolist() for k, c in per_image.items()
  }
  assert summary["truth"]["confusion"] == total.tolist()
  assert [(f["key"], f["stage"]) for f in failures] == [("d.png", "truth")]


def test_evaluate_bad_invocations_exit_2_with_one_line(truth_run, tmp_path, capsys):
  from pipeline import evaluate

  for argv in (
    [str(truth_run)],
    [str(truth_run), "--truth", str(tmp_path / "none" / "*.png")],
    [str(tmp_path), "--truth", str(truth_run / MASKS_DIR / "*.png")],
    [str(truth_run), "--truth", str(truth_run / MASKS_DIR / "*.png"), "--bf_tolerance", "-1"],
    [str(truth_run), "--truth", str(truth_run / MASKS_DIR / "*.png"), "--bf_tolerance", "two"],
  ):
    assert evaluate.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate: error: "), lines


def test_evaluate_on_gcs(corpus, truth_run, gcs_emulator, gcs_bucket):
  from pipeline import evaluate

  root, _ = corpus
  out, truth = f"gs://{gcs_bucket}/run", f"gs://{gcs_bucket}/truth"
  gcs_emulator.upload_folder(str(truth_run), out)
  gcs_emulator.upload_folder(str(root / "truth"), truth)
  assert evaluate.main([out, "--truth", f"{truth}/*.png", f"{truth}/**/*.png", "--no_report"]) == 0
  evaluation = json.loads(gcs_emulator.download_prefix(out)["evaluation.json"])
  local = json.loads((truth_run / SUMMARY_FILE).read_text())["truth"]
  assert _without(evaluation["truth"], "patterns", "images_failed", *RUN_BF_FIELDS) == _without(
    local, "patterns", "images_failed"
  )
  assert evaluation["truth"]["patterns"] == [f"{truth}/*.png", f"{truth}/**/*.png"]
