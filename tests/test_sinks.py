"""Tests of transforms/sinks.py: --skip_existing reuses a finished mask only when it is this model's and this input's.

(The background writes of ``WriteMasksFn`` are tested with the look-ahead they use, in test_lookahead.py.)
"""

import numpy as np
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP

from transforms.imaging.records import DONE, ImageHeader, ImageMask, ImageRef
from transforms.sinks import SinkSettings, SkipExistingFn, WriteMasksFn

CLASSES = [{"id": 0, "name": "a", "color": [0, 0, 0]}, {"id": 1, "name": "b", "color": [255, 0, 0]}]
MODEL = {"name": "m", "version": "1"}


def _write_one_mask(settings):
  """Writes one mask of key ``k`` with WriteMasksFn, inline; returns its statistics record."""
  ids = np.random.default_rng(0).integers(0, 2, (20, 30)).astype(np.uint8)
  mask = ImageMask(
    header=ImageHeader(uri="mem://k", key="k", height=20, width=30),
    class_ids=ids,
    class_pixels=np.bincount(ids.ravel(), minlength=2).astype(np.int64),
    class_confidence=np.ones(2),
  )
  fn = WriteMasksFn(settings)
  fn.setup()
  fn.start_bundle()
  (record,) = fn.process(mask, window=GlobalWindow(), timestamp=MIN_TIMESTAMP)
  assert not list(fn.finish_bundle() or [])
  fn.teardown()
  return record


def test_skip_existing_re_emits_the_stored_record_of_the_same_model_and_input(tmp_path):
  settings = SinkSettings(str(tmp_path), CLASSES, MODEL)
  record = _write_one_mask(settings)
  (reused,) = SkipExistingFn(settings).process(ImageRef(uri="mem://k", key="k"))
  assert isinstance(reused, TaggedOutput) and reused.tag == DONE
  assert reused.value["key"] == "k" and reused.value["model"] == record["model"] == MODEL


def test_skip_existing_redoes_an_image_of_another_model_input_or_without_its_overlay(tmp_path):
  settings = SinkSettings(str(tmp_path), CLASSES, MODEL)
  _write_one_mask(settings)
  ref = ImageRef(uri="mem://k", key="k")
  other_model = SinkSettings(str(tmp_path), CLASSES, {"name": "m", "version": "2"})
  assert list(SkipExistingFn(other_model).process(ref)) == [ref]
  other_input = ImageRef(uri="mem://elsewhere", key="k")
  assert list(SkipExistingFn(settings).process(other_input)) == [other_input]
  with_overlays = SinkSettings(str(tmp_path), CLASSES, MODEL, overlays=True)
  assert list(SkipExistingFn(with_overlays).process(ref)) == [ref]
  absent = ImageRef(uri="mem://absent", key="absent")
  assert list(SkipExistingFn(settings).process(absent)) == [absent]
