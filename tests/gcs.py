"""A real Cloud Storage stand-in for tests: the pure-Python gcp-storage-emulator.

Beam's ``gs://`` filesystem and the ``google-cloud-storage`` client both honour
``STORAGE_EMULATOR_HOST``, so pointing that variable at an in-process emulator
exercises the real client and the real Beam filesystem code with no mocks.

The one thing the emulator cannot fix is credential discovery: without Google
credentials, every process that touches ``gs://`` first spends ~20 s in Beam's
retry loop around ``google.auth.default()`` (``apache_beam/internal/gcp/auth.py``,
4 retries with exponential back-off) before it goes anonymous. Two remedies:

* in this process, :func:`prefill_beam_credentials` fills Beam's credential
  cache with "anonymous" so the lookup never runs;
* for every child process (``multi_processing`` FnApiRunner workers,
  ``python -m pipeline.run`` subprocesses), :meth:`GcsEmulator.environ` exports
  ``GOOGLE_APPLICATION_CREDENTIALS`` pointing at an ``authorized_user`` file
  that already carries an access token valid until 2099. ``google.auth.default()``
  returns it at once and never refreshes it (so nothing talks to Google's token
  endpoint); the emulator ignores the ``Authorization`` header. The token is
  meaningless anywhere else, so a stray request to real GCS fails with 401
  instead of touching real data.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import tempfile
import uuid
from typing import Dict, Mapping, Optional

from gcp_storage_emulator.server import create_server

EMULATOR_PROJECT = "deconvseg-emulator"

# An authorized_user ADC file whose access token never needs a refresh.
# google.oauth2.credentials.Credentials.from_authorized_user_info reads
# "token" and "expiry"; a valid token means before_request() never refreshes.
_EMULATOR_CREDENTIALS = {
  "type": "authorized_user",
  "client_id": "deconvseg-emulator",
  "client_secret": "deconvseg-emulator",
  "refresh_token": "deconvseg-emulator",
  "token": "deconvseg-emulator-token",
  "expiry": "2099-12-31T23:59:59Z",
  "quota_project_id": EMULATOR_PROJECT,
}


def prefill_beam_credentials() -> tuple:
  """Make Beam use anonymous credentials in this process without looking any up.

  Beam caches the result of its first credential lookup on
  ``apache_beam.internal.gcp.auth._Credentials``; a cached ``None`` means
  "anonymous", which is what Beam would fall back to after ~20 s anyway.
  Returns the previous cache state for :func:`restore_beam_credentials`.
  """
  from apache_beam.internal.gcp import auth

  cache = auth._Credentials
  with cache._credentials_lock:
    previous = (cache._credentials_init, cache._credentials)
    cache._credentials_init = True
    cache._credentials = None
  return previous


def restore_beam_credentials(previous: tuple) -> None:
  """Put back the credential cache state saved by :func:`prefill_beam_credentials`."""
  from apache_beam.internal.gcp import auth

  cache = auth._Credentials
  with cache._credentials_lock:
    cache._credentials_init, cache._credentials = previous


class GcsEmulator:
  """An in-memory gcp-storage-emulator on 127.0.0.1 with a free port.

  Usage::

      with GcsEmulator() as gcs:
          gcs.create_bucket("inputs")
          with gcs.activated():      # env vars + Beam credential cache
              ...                    # gs://inputs/... works here and in children
  """

  def __init__(self, host: str = "127.0.0.1") -> None:
    self._host = host
    self._server = None
    self._workdir: Optional[tempfile.TemporaryDirectory] = None
    self.endpoint: Optional[str] = None
    self.credentials_file: Optional[str] = None

  # -- lifecycle -----------------------------------------------------------------
  def start(self) -> "GcsEmulator":
    if self._server is not None:
      raise ValueError("GcsEmulator is already running at %s" % self.endpoint)
    # The emulator logs a warning for every string-bodied response.
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    self._server = create_server(self._host, 0, in_memory=True)
    self._server.start()
    port = self._server._api._httpd.server_address[1]
    self.endpoint = "http://%s:%d" % (self._host, port)
    self._workdir = tempfile.TemporaryDirectory(prefix="gcs-emulator-")
    self.credentials_file = os.path.join(self._workdir.name, "adc.json")
    with open(self.credentials_file, "w", encoding="utf-8") as handle:
      json.dump(_EMULATOR_CREDENTIALS, handle)
    return self

  def stop(self) -> None:
    if self._server is not None:
      self._server.stop()
      self._server._api.join(timeout=5)
      self._server = None
    if self._workdir is not None:
      self._workdir.cleanup()
      self._workdir = None

  def __enter__(self) -> "GcsEmulator":
    return self.start()

  def __exit__(self, *exc_info) -> None:
    self.stop()

  # -- environment ---------------------------------------------------------------
  def environ(self) -> Dict[str, str]:
    """Variables that send any process's GCS traffic to this emulator, credential-free."""
    if self.endpoint is None:
      raise ValueError("GcsEmulator is not running; call start() first")
    return {
      "STORAGE_EMULATOR_HOST": self.endpoint,
      "GOOGLE_APPLICATION_CREDENTIALS": self.credentials_file,
      "GOOGLE_CLOUD_PROJECT": EMULATOR_PROJECT,
      "NO_GCE_CHECK": "true",
    }

  def subprocess_env(self, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """A full environment for ``subprocess.run(..., env=...)``."""
    env = dict(os.environ if base is None else base)
    env.update(self.environ())
    return env

  def activated(self):
    """Context manager: export :meth:`environ` and pre-fill Beam's credential cache."""
    return _Activated(self)

  # -- buckets and objects -------------------------------------------------------
  def client(self):
    """A real ``google.cloud.storage.Client`` talking to this emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
      project=EMULATOR_PROJECT,
      credentials=AnonymousCredentials(),
      client_options={"api_endpoint": self.endpoint},
    )

  def create_bucket(self, name: Optional[str] = None) -> str:
    """Create a bucket (a fresh unique name when none given) and return its name."""
    name = name or "test-" + uuid.uuid4().hex[:12]
    self.client().create_bucket(name)
    return name

  def upload_folder(self, local_dir, gcs_prefix: str) -> list:
    """Copy every file under ``local_dir`` to ``gs://bucket/prefix/<relative path>``."""
    bucket_name, prefix = split_gcs_path(gcs_prefix)
    root = pathlib.Path(local_dir)
    if not root.is_dir():
      raise ValueError("upload_folder: %s is not a directory" % root)
    bucket = self.client().bucket(bucket_name)
    uploaded = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
      name = _join(prefix, path.relative_to(root).as_posix())
      bucket.blob(name).upload_from_filename(str(path))
      uploaded.append("gs://%s/%s" % (bucket_name, name))
    return uploaded

  def download_prefix(self, gcs_prefix: str) -> Dict[str, bytes]:
    """Every object under ``gs://bucket/prefix/`` as {path relative to prefix: bytes}."""
    bucket_name, prefix = split_gcs_path(gcs_prefix)
    listing_prefix = prefix + "/" if prefix else ""
    contents = {}
    for blob in self.client().list_blobs(bucket_name, prefix=listing_prefix):
      contents[blob.name[len(listing_prefix) :]] = blob.download_as_bytes()
    return contents

  def download_to_folder(self, gcs_prefix: str, local_dir) -> Dict[str, bytes]:
    """Mirror ``gs://bucket/prefix/`` into ``local_dir``; returns what was written."""
    contents = self.download_prefix(gcs_prefix)
    root = pathlib.Path(local_dir)
    for relative, data in contents.items():
      target = root / relative
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes(data)
    return contents


class _Activated:
  def __init__(self, emulator: GcsEmulator) -> None:
    self._emulator = emulator
    self._saved_env: Dict[str, Optional[str]] = {}
    self._saved_cache = None

  def __enter__(self) -> GcsEmulator:
    for key, value in self._emulator.environ().items():
      self._saved_env[key] = os.environ.get(key)
      os.environ[key] = value
    self._saved_cache = prefill_beam_credentials()
    return self._emulator

  def __exit__(self, *exc_info) -> None:
    restore_beam_credentials(self._saved_cache)
    for key, value in self._saved_env.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value


def split_gcs_path(path: str) -> tuple:
  """``gs://bucket/a/b/`` -> ``("bucket", "a/b")``; ValueError for anything else."""
  if not path.startswith("gs://"):
    raise ValueError("expected a gs:// path, got %r" % path)
  bucket, _, prefix = path[len("gs://") :].partition("/")
  if not bucket:
    raise ValueError("no bucket in %r" % path)
  return bucket, prefix.strip("/")


def read_local_tree(local_dir) -> Dict[str, bytes]:
  """Every file under ``local_dir`` as {relative posix path: bytes}, for comparing runs."""
  root = pathlib.Path(local_dir)
  return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _join(prefix: str, name: str) -> str:
  return "%s/%s" % (prefix, name) if prefix else name
