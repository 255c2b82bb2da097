"""./run_pipeline.sh with no arguments segments the bundled samples from a clean copy of the repo."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from pipeline_helpers import REPO, check_accounting, read_outputs

from transforms.imaging.records import MASKS_DIR

pytestmark = pytest.mark.slow


def _clean_copy(target):
  """The tracked files as they are in the working tree (no .venv, no outputs)."""
  files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
  for name in files.decode("utf-8").split("\0"):
    if not name or not os.path.exists(os.path.join(REPO, name)):
      continue
    destination = os.path.join(target, name)
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    shutil.copy2(os.path.join(REPO, name), destination)


def test_run_pipeline_sh_without_arguments(tmp_path):
  checkout = tmp_path / "checkout"
  _clean_copy(str(checkout))
  venv = os.path.join(REPO, ".venv")
  # An active environment with the dependencies is used as is (no network needed).
  env = dict(os.environ, VIRTUAL_ENV=venv, PATH=os.path.join(venv, "bin") + os.pathsep + os.environ["PATH"])
  env.pop("PYTHONPATH", None)
  proc = subprocess.run(["./run_pipeline.sh"], cwd=str(checkout), env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  output = checkout / "output"
  assert f"Results in {output}" in proc.stdout
  summary, records, failures = read_outputs(str(output))
  samples = sorted(os.listdir(checkout / "samples" / "images"))
  shard_keys = [k for k in records if k.startswith("shard/")]
  check_accounting(summary, records, failures, expected_read=len(samples) + len(shard_keys))
  assert not failures and len(shard_keys) >= 1
  with open(checkout / "model" / "default" / "card.json") as f:
    for entry in json.load(f)["classes"]:
      assert entry["name"] in proc.stdout  # the per-class table
  for name in samples:
    record = records[name]
    with (
      Image.open(checkout / "samples" / "images" / name) as source,
      Image.open(output / MASKS_DIR / (name + ".png")) as mask,
    ):
      oriented = source.size[::-1] if (source.getexif().get(0x0112, 1) in (5, 6, 7, 8)) else source.size
      assert mask.size == oriented == (record["width"], record["height"])
      counts = np.bincount(np.asarray(mask).ravel(), minlength=len(record["classes"]))
      assert counts.tolist() == [c["pixels"] for c in record["classes"]]
