"""Tests of transforms/model_runtime.py: the model handle that pickles without its model, and the class id check."""

import pickle

import numpy as np
from pipeline_helpers import count_loads

from model import engines
from model.engines import EngineChoice
from transforms.imaging.input_spec import DEFAULT_SPEC
from transforms.model_runtime import SegmenterHandle, class_id_beyond


def test_class_id_beyond_names_the_largest_id_the_card_does_not_list():
  ids = np.array([[0, 1], [3, 2]], np.uint8)
  assert class_id_beyond(ids, 4) is None and class_id_beyond(ids, 3) == 3 and class_id_beyond(ids, 1) == 3
  assert class_id_beyond(3, 3) == 3 and class_id_beyond(2, 3) is None  # a maximum the engine already took
  assert class_id_beyond(np.zeros((0, 4, 4), np.uint8), 1) is None


def test_the_handle_pickles_without_the_model_and_reuses_it_in_this_process(fake_model, monkeypatch):
  loads, _ = count_loads(monkeypatch)
  segmenter = engines.load(fake_model, EngineChoice("openvino", "fp32"), DEFAULT_SPEC)
  handle = SegmenterHandle(fake_model, loaded=segmenter)
  copy = pickle.loads(pickle.dumps(handle))
  assert copy._loaded is None and copy.model_dir == fake_model
  assert copy.acquire() is segmenter and loads == [fake_model]  # same process: the launcher's model
  elsewhere = pickle.loads(pickle.dumps(SegmenterHandle(fake_model)))
  assert elsewhere.acquire() is not segmenter and loads == [fake_model, fake_model]  # unknown key: loads its own
