"""transforms.staging: a gs:// model directory copied locally through Beam's filesystem."""

import os

import pytest
from pipeline_helpers import REPO

from tests.gcs import read_local_tree
from transforms.staging import is_remote, local_copy

MODEL = os.path.join(REPO, "model", "default")


def test_local_paths_are_used_in_place(tmp_path):
  assert local_copy(str(tmp_path)) == str(tmp_path)
  assert not is_remote("/data/model") and not is_remote("file:///data/model")
  assert is_remote("gs://bucket/model")


def test_gs_directory_is_copied_once_and_recopied_when_it_changes(gcs_emulator, gcs_bucket, tmp_path):
  uri = "gs://%s/models/default/" % gcs_bucket
  gcs_emulator.upload_folder(MODEL, uri)
  cache = str(tmp_path / "cache")

  first = local_copy(uri, cache_root=cache)
  assert read_local_tree(first) == read_local_tree(MODEL)
  assert local_copy(uri, cache_root=cache) == first
  assert [name for name in os.listdir(cache)] == [os.path.basename(first)]  # no partial copies left

  gcs_emulator.client().bucket(gcs_bucket).blob("models/default/card.json").upload_from_string(b"{}")
  second = local_copy(uri, cache_root=cache)
  assert second != first
  with open(os.path.join(second, "card.json"), "rb") as handle:
    assert handle.read() == b"{}"


def test_loads_as_a_saved_model_after_copying(gcs_emulator, gcs_bucket, tmp_path):
  import numpy as np
  import tensorflow as tf

  uri = "gs://%s/m" % gcs_bucket
  gcs_emulator.upload_folder(MODEL, uri)
  loaded = tf.saved_model.load(os.path.join(local_copy(uri, cache_root=str(tmp_path)), "saved_model"))
  outputs = loaded.signatures["serving_default"](images=tf.zeros([1, 64, 64, 3], tf.uint8))
  assert outputs["class_ids"].shape == (1, 64, 64) and outputs["confidence"].dtype == tf.float32
  assert np.all(outputs["confidence"].numpy() > 0)


def test_missing_directory_is_a_clear_error(gcs_bucket):
  with pytest.raises(ValueError, match="is empty or does not exist"):
    local_copy("gs://%s/nothing-here" % gcs_bucket)
