"""Shared pytest set-up: quiet TensorFlow, no Google credential probing."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_GCE_CHECK", "true")
# Every pipeline run of the tests, in this process or a child, defaults to fp32 (pipeline.options.default_precision),
# so pixels compared with a reference do not depend on whether this CPU has bf16; tests of the automatic choice
# pass --precision=auto.
os.environ["DECONVSEG_PRECISION"] = "fp32"
# OpenVINO IRs converted from test models go to a cache of this test session (and its child processes),
# never to the user's ~/.cache.
import tempfile as _tempfile

os.environ["DECONVSEG_CACHE"] = _tempfile.mkdtemp(prefix="deconvseg-test-cache-")

# The GCS emulator fixtures (tests/gcs_fixtures.py) and helpers are imported as
# "tests.*", which needs the repository root (pipeline_helpers.REPO, the one definition)
# on sys.path even when pytest is not started as "python -m pytest" from the root.
# pytest has put tests/ itself on sys.path before loading this file.
import sys as _sys

from pipeline_helpers import REPO as _REPO  # noqa: E402

if _REPO not in _sys.path:
  _sys.path.insert(0, _REPO)
pytest_plugins = ["tests.gcs_fixtures"]

import pytest  # noqa: E402  (after the environment set-up above)


@pytest.fixture(scope="session")
def fake_model(tmp_path_factory):
  """The contract-conforming fake model (tests/fake_model.py), exported once per session.

  Shared by every module that only reads it; a test that needs to change a
  model copies it first (or builds its own with ``build_fake_model``).
  """
  from fake_model import build_fake_model

  return build_fake_model(str(tmp_path_factory.mktemp("fake_model")))
