"""The whole pipeline from gs:// to gs:// on the GCS emulator equals the same run on local files."""

import io
import json
import re

import numpy as np
import pytest
from fake_model import build_fake_model
from PIL import Image
from pipeline_helpers import REPO, scene

from tests.gcs import read_local_tree
from transforms.imaging.records import REPORT_FILE, SUMMARY_FILE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
  """Inputs, a contract model and the outputs of a run on local files."""
  from pipeline.run import run

  root = tmp_path_factory.mktemp("local")
  inputs = root / "in"
  for index, (height, width) in enumerate([(50, 70), (64, 64), (33, 91)]):
    path = inputs / ("drop/a" if index % 2 else "drop") / f"tile_{index}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene(height, width, seed=index)).save(path)
  Image.fromarray(scene(40, 40, seed=9)).save(inputs / "drop" / "photo.jpg", quality=90)
  (inputs / "drop" / "broken.png").write_bytes(b"not an image")
  model = build_fake_model(str(root / "model"))
  output = root / "out"
  run(["--input", f"{inputs}/**", "--output", str(output), "--model", model], save_main_session=False)
  return {"in": str(inputs), "model": model, "out": str(output)}


# Fields that differ between any two runs: times, and the run's identity (summary.json, run_state.json).
# "ir" and "ir_source": where this process found the model's OpenVINO IR (converted now, or from the cache or a staged copy).
RUN_SPECIFIC = ("start_time", "end_time", "run_id", "pid", "started", "finished", "ir", "ir_source")
RUN_ID_IN_NAME = re.compile(r"-\d{8}T\d{6}Z-[0-9a-f]{8}-")  # record files are named by run


def _normalised(tree, roots):
  """Outputs with run-specific paths replaced by IN/OUT/MODEL, lines sorted, times and run ids dropped.

  The summary's ``io`` byte counts depend on the paths' lengths (refs carry URIs, masks embed
  their record), so ``io`` keeps only what must agree: images read, bytes read, elements per shuffle.
  """

  def text(value):
    for token, path in sorted(roots.items(), key=lambda item: -len(item[1])):
      value = value.replace(path.rstrip("/"), token)
    return RUN_ID_IN_NAME.sub("-RUN-", value)

  def clean(value):
    if isinstance(value, dict):
      if "shuffle" in value and "read_bytes" in value:  # summary.json "io"
        return {
          "images_read": value["images_read"],
          "read_bytes": value["read_bytes"],
          "shuffle_elements": {k: v["elements"] for k, v in value["shuffle"].items() if isinstance(v, dict)},
        }
      return {k: clean(v) for k, v in value.items() if k not in RUN_SPECIFIC}
    if isinstance(value, list):
      return [clean(v) for v in value]
    return text(value) if isinstance(value, str) else value

  result = {}
  for name, data in tree.items():
    name = RUN_ID_IN_NAME.sub("-RUN-", name)
    if name.endswith(".png"):
      image = Image.open(io.BytesIO(data))
      info = {k: clean(json.loads(v)) if k == "deconvseg:stats" else v for k, v in image.info.items()}
      result[name] = (image.mode, image.size, np.asarray(image).tobytes(), image.getpalette(), info)
    elif name.endswith(".jsonl"):
      result[name] = sorted(
        json.dumps(clean(json.loads(line)), sort_keys=True) for line in data.decode("utf-8").splitlines()
      )
    elif name.endswith(".json"):
      result[name] = clean(json.loads(data))
    else:
      result[name] = text(data.decode("utf-8"))
  return result


@pytest.mark.parametrize("model_on", ["local disk", "gcs"])
def test_gcs_run_matches_local_run(local_run, gcs_emulator, gcs_bucket, model_on):
  from pipeline.run import run

  gcs_in, gcs_out = f"gs://{gcs_bucket}/in", f"gs://{gcs_bucket}/out"
  gcs_emulator.upload_folder(local_run["in"], gcs_in)
  model = local_run["model"]
  if model_on == "gcs":
    model = f"gs://{gcs_bucket}/models/fake"
    gcs_emulator.upload_folder(local_run["model"], model)

  run(["--input", f"{gcs_in}/**", "--output", gcs_out, "--model", model], save_main_session=False)

  local = _normalised(
    read_local_tree(local_run["out"]), {"IN": local_run["in"], "OUT": local_run["out"], "MODEL": local_run["model"]}
  )
  remote = _normalised(gcs_emulator.download_prefix(gcs_out), {"IN": gcs_in, "OUT": gcs_out, "MODEL": model})
  assert sorted(remote) == sorted(local)
  assert [name for name in local if name.startswith("masks/")], sorted(local)
  for name in local:
    if name == REPORT_FILE:  # written after each local run; it shows that run's start and end time
      continue
    assert remote[name] == local[name], name
  summary = remote[SUMMARY_FILE]
  assert summary["counts"] == {"read": 5, "segmented": 4, "failed": 1, "reused_existing": 0}


def test_cli_subprocess_runs_on_gcs_without_credential_delay(local_run, gcs_emulator, gcs_bucket):
  """``python -m pipeline.run`` in a child process: the emulator env is all it needs."""
  import subprocess
  import sys
  import time

  gcs_emulator.upload_folder(local_run["in"], f"gs://{gcs_bucket}/in")
  started = time.monotonic()
  done = subprocess.run(
    [
      sys.executable,
      "-m",
      "pipeline.run",
      "--input",
      f"gs://{gcs_bucket}/in/**",
      "--output",
      f"gs://{gcs_bucket}/out",
      "--model",
      local_run["model"],
    ],
    env=gcs_emulator.subprocess_env(),
    capture_output=True,
    text=True,
    timeout=300,
    cwd=REPO,
  )
  elapsed = time.monotonic() - started
  assert done.returncode == 0, done.stderr[-3000:]
  # Beam logs this warning after ~20 s of google.auth.default() retries.
  assert "Unable to find default credentials" not in done.stderr
  summary = json.loads(gcs_emulator.download_prefix(f"gs://{gcs_bucket}/out")[SUMMARY_FILE])
  assert summary["counts"] == {"read": 5, "segmented": 4, "failed": 1, "reused_existing": 0}
  # Imports (TensorFlow ~3-5 s) and the run take ~10 s on 2 busy cores; the budget is loose
  # because the credential check above is the precise one.
  assert elapsed < 60, "CLI run took %.1f s" % elapsed
