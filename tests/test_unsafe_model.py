"""A model directory is only ever loaded as a TensorFlow SavedModel (graph + variables), never unpickled.

A hostile --model that carries pickles where the SavedModel should be (and
beside it) must be refused with a clear error, and the payload must never run.
"""

import os
import pickle
import shutil

import pytest
from fake_model import build_fake_model
from PIL import Image
from pipeline_helpers import scene

from pipeline.run import main


class _Payload:
  """Unpickling this creates a marker file: proof that something unpickled the model."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


@pytest.fixture
def hostile_model(tmp_path):
  model_dir = tmp_path / "hostile"
  shutil.copytree(build_fake_model(str(tmp_path / "fake")), model_dir)
  shutil.rmtree(model_dir / "saved_model")
  (model_dir / "saved_model").mkdir()
  marker = tmp_path / "payload-ran"
  pickled = pickle.dumps(_Payload(str(marker)))
  for name in ("saved_model.pb", "model.pkl", "keras_metadata.pb"):
    (model_dir / "saved_model" / name).write_bytes(pickled)
  (model_dir / "model.pkl").write_bytes(pickled)
  return model_dir, marker


def test_pickled_model_is_refused_and_never_unpickled(capsys, tmp_path, hostile_model):
  model_dir, marker = hostile_model
  images = tmp_path / "in"
  images.mkdir()
  Image.fromarray(scene(16, 16)).save(images / "a.png")
  code = main(["--input", str(images / "*.png"), "--output", str(tmp_path / "out"), "--model", str(model_dir)])
  err = capsys.readouterr().err
  assert code == 2 and "cannot load the SavedModel" in err and "Traceback" not in err, err
  assert not marker.exists(), "the model directory was unpickled"
  assert not os.path.exists(tmp_path / "out")
