"""The speed-ups around the model call keep results exact.

* per-class counts and confidence sums reduced inside the TensorFlow call
  equal numpy's over each tile's owned rectangle, and bad class ids are caught;
* a local run loads the model once: the start-up check hands its model to the
  in-process worker through the graph's ``SegmenterHandle``, and nothing is
  held after the run or for other runners.
"""

import gc
import json
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.utils import shared
from fake_model import CLASSES
from PIL import Image
from pipeline_helpers import count_loads, scene

from model import engines
from model.engines import EngineChoice
from pipeline.run import run
from transforms.imaging.input_spec import DEFAULT_SPEC
from transforms.imaging.records import SUMMARY_FILE


def _numpy_stats(class_ids, confidence, owned, num_classes):
  top, bottom, left, right = owned
  ids = class_ids[top:bottom, left:right].ravel()
  weights = confidence[top:bottom, left:right].astype(np.float64).ravel()
  return (
    np.bincount(ids, minlength=num_classes)[:num_classes],
    np.bincount(ids, weights=weights, minlength=num_classes)[:num_classes],
  )


ENGINES = [EngineChoice("tensorflow", "fp32"), EngineChoice("openvino", "fp32")]


@pytest.mark.parametrize("choice", ENGINES, ids=EngineChoice.describe)
def test_engine_statistics_equal_numpy_over_the_owned_rectangle(fake_model, choice):
  segmenter = engines.load(fake_model, choice, DEFAULT_SPEC)
  images = np.stack([scene(96, 80, seed=seed) for seed in range(3)])
  owned = np.array([[0, 96, 0, 80], [10, 50, 7, 61], [95, 96, 0, 1]], np.int32)
  class_ids, pixels, sums, top = segmenter.segment_with_stats(images, owned, len(CLASSES))
  raw_ids, confidence = segmenter.predict(images)
  np.testing.assert_array_equal(class_ids, raw_ids)
  assert pixels.dtype == np.int64 and sums.dtype == np.float64
  for row in range(len(images)):
    expected_pixels, expected_sums = _numpy_stats(raw_ids[row], confidence[row], owned[row], len(CLASSES))
    np.testing.assert_array_equal(pixels[row], expected_pixels)
    np.testing.assert_allclose(sums[row], expected_sums, rtol=1e-12)
  assert pixels[0].sum() == 96 * 80 and pixels[1].sum() == 40 * 54 and pixels[2].sum() == 1
  assert top == int(raw_ids.max())


@pytest.mark.parametrize("choice", ENGINES, ids=EngineChoice.describe)
def test_engine_statistics_report_class_ids_beyond_the_card(fake_model, choice):
  # With a card of two classes, the fake model's ids 2 and 3 are out of range:
  # they must show up in the returned maximum, not vanish into dropped bins.
  segmenter = engines.load(fake_model, choice, DEFAULT_SPEC)
  image = np.zeros((1, 8, 8, 3), np.uint8)
  image[..., 2] = 200  # blue: class 3
  _, pixels, _, top = segmenter.segment_with_stats(image, np.array([[0, 8, 0, 8]], np.int32), 2)
  assert top == 3 and pixels.sum() == 0


class _Other:
  pass


def _all_released(models) -> bool:
  """True when no loaded model is held any more.

  Beam's per-process ``Shared`` cache keeps the last object it handed out
  alive until another is acquired (RunInference does so too); the next run's
  first acquire does that, and so does this.
  """
  other = _Other()
  shared.Shared().acquire(lambda: other)
  gc.collect()
  return all(ref() is None for ref in models)


def _write_inputs(folder, count=3):
  os.makedirs(folder)
  for i in range(count):
    Image.fromarray(scene(40, 50, seed=i)).save(os.path.join(folder, f"img{i}.png"))


def test_a_local_run_loads_the_model_once(fake_model, tmp_path, monkeypatch):
  loads, models = count_loads(monkeypatch)
  _write_inputs(str(tmp_path / "in"))
  run(
    ["--input", str(tmp_path / "in" / "*.png"), "--output", str(tmp_path / "out"), "--model", fake_model],
    save_main_session=False,
  )
  assert loads == [fake_model]
  assert _all_released(models)  # nothing held after the run
  with open(tmp_path / "out" / SUMMARY_FILE) as handle:
    assert json.load(handle)["counts"]["segmented"] == 3


@pytest.mark.slow
def test_the_check_model_is_not_held_for_out_of_process_workers(fake_model, tmp_path, monkeypatch):
  loads, models = count_loads(monkeypatch)
  held_while_running = []
  original_run = beam.Pipeline.run

  def checking_run(self, *args, **kwargs):
    held_while_running.append(not _all_released(models))
    return original_run(self, *args, **kwargs)

  monkeypatch.setattr(beam.Pipeline, "run", checking_run)
  _write_inputs(str(tmp_path / "in"), count=2)
  run(
    [
      "--input",
      str(tmp_path / "in" / "*.png"),
      "--output",
      str(tmp_path / "out"),
      "--model",
      fake_model,
      "--direct_running_mode=multi_processing",
      "--direct_num_workers=1",
    ],
    save_main_session=False,
  )
  # The check loaded it here and let it go before the run started; the worker process loaded its own.
  assert loads == [fake_model] and held_while_running == [False]
  with open(tmp_path / "out" / SUMMARY_FILE) as handle:
    assert json.load(handle)["counts"]["segmented"] == 2
