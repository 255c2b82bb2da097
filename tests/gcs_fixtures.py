"""pytest fixtures around :mod:`tests.gcs` (loaded via ``pytest_plugins`` in conftest).

``gcs_emulator`` is session-scoped: one in-memory emulator per test run, started
on first use and stopped (with the environment restored) at the end. Tests get
isolation from ``gcs_bucket``, a fresh uniquely named bucket each.
"""

from __future__ import annotations

import pytest

from tests.gcs import GcsEmulator


@pytest.fixture(scope="session")
def gcs_emulator():
  """A running emulator; ``gs://`` works in this process and in any child process.

  While it is active, ``STORAGE_EMULATOR_HOST``, ``GOOGLE_APPLICATION_CREDENTIALS``
  (a never-expiring fake token), ``GOOGLE_CLOUD_PROJECT`` and ``NO_GCE_CHECK`` are
  exported, and Beam's credential cache is pre-filled, so no process waits
  ~20 s for Google credentials.
  """
  with GcsEmulator() as emulator, emulator.activated():
    yield emulator


@pytest.fixture
def gcs_bucket(gcs_emulator):
  """Name of a new, empty bucket on the session emulator."""
  return gcs_emulator.create_bucket()
