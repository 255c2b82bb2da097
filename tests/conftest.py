"""Shared pytest set-up: quiet TensorFlow, no Google credential probing."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_GCE_CHECK", "true")

# The GCS emulator fixtures (tests/gcs_fixtures.py) and helpers are imported as
# "tests.*", which needs the repository root on sys.path even when pytest is not
# started as "python -m pytest" from the root.
import sys as _sys
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in _sys.path:
    _sys.path.insert(0, _ROOT)
pytest_plugins = ["tests.gcs_fixtures"]
