"""--tta flips: class probabilities averaged over four flips, inside one engine call, recorded in the outputs.

Also bench.tta_flips, the measurement that decided to ship it: its views are flipped back before the average.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pipeline_helpers import REPO, read_mask, read_outputs, run_pipeline

from bench.tta_flips import _flips, _unflip
from model import engines
from model.engines.choice import EngineError, choose
from model.engines.cpu import CpuFeatures
from model.engines.flips import VIEWS, FlipAveragedSegmenter, flip
from pipeline.errors import OptionsError

DEFAULT_MODEL = os.path.join(REPO, "model", "default")
AVX2 = CpuFeatures("AMD EPYC", frozenset({"avx", "avx2"}))


def _load(tta="flips"):
  with open(os.path.join(DEFAULT_MODEL, "card.json")) as handle:
    spec = engines.card_input(json.load(handle))
  choice = engines.choose_here(DEFAULT_MODEL, "auto", "fp32", tta=tta)
  return engines.load(DEFAULT_MODEL, choice, spec, tta=tta)


class _Recording:
  """An engine whose probabilities depend on direction (a pixel and its right-hand neighbour), counting calls."""

  engine, precision, spec = "openvino", "fp32", None

  def __init__(self):
    self.batches = []

  def predict_probabilities(self, images):
    self.batches.append(images.shape)
    value = images[..., 0].astype(np.float32)
    right = np.concatenate([value[:, :, 1:], value[:, :, -1:]], axis=2)
    first = 1 / (1 + np.exp(-(value - 0.5 * right - 40) / 20))
    return np.stack([first, 1 - first], axis=-1).astype(np.float32)


def test_each_view_is_flipped_back_before_the_mean_and_the_engine_is_called_once():
  images = np.random.default_rng(3).integers(0, 255, (3, 10, 14, 1), dtype=np.uint8)
  inner = _Recording()
  class_ids, confidence = FlipAveragedSegmenter(inner).predict(images)
  assert inner.batches == [(12, 10, 14, 1)]  # one call holding the four views
  views = [_Recording().predict_probabilities(np.ascontiguousarray(flip(images, *view))) for view in VIEWS]
  expected = sum(flip(p, *view) for p, view in zip(views, VIEWS)) / 4
  np.testing.assert_array_equal(class_ids, expected.argmax(-1))
  np.testing.assert_allclose(confidence, expected.max(-1), rtol=1e-6)
  plain = _Recording().predict_probabilities(images).argmax(-1)
  assert (plain != class_ids).any()  # the direction-dependent model really disagrees with its flips


def test_the_bundled_model_under_flips_equals_the_mean_of_its_four_flipped_runs():
  segmenter = _load()
  images = np.random.default_rng(0).integers(0, 255, (2, 64, 96, 3), dtype=np.uint8)
  class_ids, confidence = segmenter.predict(images)
  inner = segmenter.segmenter
  mean = sum(flip(inner.predict_probabilities(np.ascontiguousarray(flip(images, *v))), *v) for v in VIEWS) / 4
  assert (class_ids == mean.argmax(-1)).mean() > 0.9999
  np.testing.assert_allclose(confidence, mean.max(-1), atol=1e-5)
  plain_ids, plain_confidence = inner.predict(images)
  np.testing.assert_allclose(inner.predict_probabilities(images).max(-1), plain_confidence, atol=1e-6)
  assert class_ids.dtype == np.uint8 and confidence.dtype == np.float32
  assert segmenter.describe()["tta"] == "flips" and segmenter.predict(images[:0])[0].shape == (0, 64, 96)


@pytest.mark.parametrize(
  "kwargs, words",
  [
    ({"engine": "tensorflow"}, ["--engine tensorflow cannot run it", "--engine auto or openvino"]),
    ({"engine": "onnxruntime"}, ["--engine onnxruntime cannot run it"]),
    ({"mixed_precision": True}, ["--mixed_precision"]),
    ({"has_openvino": False}, ["pip install", "openvino"]),
  ],
)
def test_flips_refuse_engines_without_probabilities(kwargs, words):
  settings = dict(engine="auto", precision="auto", features=AVX2, gpu=False, has_openvino=True, has_int8=False)
  settings.update(kwargs)
  with pytest.raises(EngineError) as error:
    choose(settings.pop("engine"), settings.pop("precision"), tta="flips", **settings)
  assert all(word in str(error.value) for word in words), str(error.value)


def test_flips_run_on_openvino_even_where_a_gpu_is_visible():
  choice = choose("auto", "fp32", features=AVX2, gpu=True, has_openvino=True, has_int8=False, tta="flips")
  assert (choice.engine, choice.precision) == ("openvino", "fp32") and "--tta flips" in choice.reason


def test_a_run_with_flips_writes_their_masks_and_says_so(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  pixels = np.asarray(Image.open(os.path.join(REPO, "samples", "images", "farm_0001.png")).convert("RGB"))
  Image.fromarray(pixels[:96, :160]).save(images / "farm.png")
  run_pipeline(images / "*.png", tmp_path / "out", DEFAULT_MODEL, "--tta", "flips", "--precision", "fp32")
  summary, records, failures = read_outputs(str(tmp_path / "out"))
  assert not failures and list(records) == ["farm.png"]
  assert summary["options"]["tta"] == "flips" and summary["engine"]["tta"] == "flips"
  mask = read_mask(str(tmp_path / "out"), "farm.png")
  expected, _ = _load().predict(pixels[None, :96, :160])
  np.testing.assert_array_equal(mask, expected[0])
  report = (tmp_path / "out" / "report.html").read_text()
  assert "Test-time flips" in report and "averaged over 4 flips" in report


def test_a_run_without_flips_records_none(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(images / "flat.png")
  run_pipeline(images / "*.png", tmp_path / "out", DEFAULT_MODEL, "--precision", "fp32")
  summary, _, _ = read_outputs(str(tmp_path / "out"))
  assert summary["options"]["tta"] == "none" and "tta" not in summary["engine"]
  assert "Test-time flips" not in (tmp_path / "out" / "report.html").read_text()


def test_flips_on_gpu_workers_stop_before_any_work(tmp_path):
  with pytest.raises(OptionsError, match="drop --gpu_type"):
    run_pipeline(
      os.path.join(REPO, "samples", "images", "*.png"),
      tmp_path / "out",
      DEFAULT_MODEL,
      "--tta",
      "flips",
      "--gpu_type",
      "nvidia-tesla-t4",
    )
  assert not (tmp_path / "out").exists()


def test_flips_with_the_tensorflow_engine_stop_the_command_with_one_line(tmp_path):
  process = subprocess.run(
    [sys.executable, "-m", "pipeline.run", "--input", "samples/images/*.png", "--output", str(tmp_path / "out")]
    + ["--tta", "flips", "--engine", "tensorflow"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert process.returncode == 2 and "--engine auto or openvino" in process.stderr, process.stderr
  assert process.stderr.count("\n") == 1 and not (tmp_path / "out" / "masks").exists()


def test_the_bench_flips_each_view_back_onto_the_original_pixels():
  images = tf.constant(np.random.default_rng(0).random((2, 5, 7, 3)), tf.float32)
  views = _flips(images)
  assert len(views) == 4
  assert len({views[index].numpy().tobytes() for index in range(4)}) == 4  # four different views
  for index, view in enumerate(views):
    np.testing.assert_array_equal(_unflip(index, view).numpy(), images.numpy())
  np.testing.assert_array_equal(views[1].numpy(), images.numpy()[:, :, ::-1])
  np.testing.assert_array_equal(views[3].numpy(), images.numpy()[:, ::-1, ::-1])
