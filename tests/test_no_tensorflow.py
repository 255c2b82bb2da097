"""A run of the bundled model on CPUs imports TensorFlow in no process.

Importing TensorFlow costs 3-5 s and about 1 GB per process, so the OpenVINO
engine, the TFRecord input (``transforms.imaging.tfrecord.Example``) and the 16-bit
PNG decoder (pypng) must not pull it in. Each check runs in a fresh
interpreter, since the test session itself has usually imported TensorFlow.
"""

import json
import os
import subprocess
import sys

import pytest
from pipeline_helpers import REPO

# Top-level modules that are TensorFlow or load it.
TF_PACKAGES = ("tensorflow", "tf_keras", "keras", "tensorboard", "tensorflow_hub", "tensorflow_io")

_REPORT = f"""
import json, sys
tf_ish = sorted(name for name in sys.modules if name.split(".")[0] in {TF_PACKAGES!r})
print("RESULT " + json.dumps({{"tensorflow": "tensorflow" in sys.modules, "tf_modules": tf_ish[:20], **result}}))
"""


def _child(code, tmp_path):
  """Runs ``code`` (which sets ``result``) in a fresh interpreter at the repository root; its JSON report."""
  env = dict(os.environ, DECONVSEG_CACHE=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("PYTHONPATH", None)
  proc = subprocess.run(
    [sys.executable, "-c", code + _REPORT], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
  )
  lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
  assert proc.returncode == 0 and lines, f"child failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
  return json.loads(lines[-1][len("RESULT ") :]), proc.stderr


@pytest.mark.slow
def test_openvino_run_of_the_samples_imports_no_tensorflow(tmp_path):
  out = tmp_path / "out"
  code = f"""
import json
from pipeline.run import run
run(["--input", "samples/images/*", "--tfrecord", "samples/shards/*.tfrecord*", "--output", {str(out)!r},
     "--runner=FnApiRunner", "--engine", "openvino"], save_main_session=False)
with open({str(out / "summary.json")!r}) as handle:
  result = {{"counts": json.load(handle)["counts"]}}
"""
  result, stderr = _child(code, tmp_path)
  assert (result["counts"]["read"], result["counts"]["segmented"]) == (16, 16), result
  assert not result["tensorflow"] and not result["tf_modules"], result
  # Library noise a plain run used to print: Beam's memory probe, and a plain TIFF taken for a GeoTIFF.
  assert "memory usage cannot be fetched" not in stderr, stderr[-2000:]
  assert "GeoTIFF was read without its CRS" not in stderr, stderr[-2000:]


def test_sixteen_bit_colour_png_decodes_without_tensorflow(tmp_path):
  code = """
import io
import numpy as np, png
from transforms.imaging.image_decoder import decode_image, decode_native
from transforms.imaging.input_spec import InputSpec
rgb16 = np.random.default_rng(3).integers(0, 65536, (9, 7, 3), dtype=np.uint16)
buffer = io.BytesIO()
png.Writer(7, 9, bitdepth=16, greyscale=False).write(buffer, rgb16.reshape(9, 21).tolist())
native = decode_native(buffer.getvalue(), 10**9)
pixels, _ = decode_image(buffer.getvalue(), 10**9, InputSpec(channels=3, dtype="uint16"))
result = {"same": bool((native.pixels == rgb16).all() and (pixels == rgb16).all()), "kind": str(native.kind)}
"""
  result, _ = _child(code, tmp_path)
  assert result["same"], result
  assert not result["tensorflow"] and not result["tf_modules"], result


@pytest.mark.slow
def test_onnx_model_wrapped_and_run_imports_no_tensorflow(tmp_path):
  """model.wrap --onnx and a pipeline run of what it wrote: OpenVINO and onnx only, no TensorFlow in the process."""
  import onnx
  import onnx_models

  source = str(tmp_path / "unet.onnx")
  onnx.save(onnx_models.nchw_stride4_softmax(), source)
  (tmp_path / "classes.json").write_text(json.dumps([{"id": i, "name": f"c{i}"} for i in range(3)]))
  model_dir, out = str(tmp_path / "model"), str(tmp_path / "out")
  code = f"""
import json
from model.wrap.cli import main
main(["--onnx", {source!r}, "--classes", {str(tmp_path / "classes.json")!r}, "--out", {model_dir!r},
      "--normalization", "imagenet"])
from pipeline.run import run
run(["--input", "samples/images/strip_000*.png", "--output", {out!r}, "--model", {model_dir!r},
     "--runner=FnApiRunner"], save_main_session=False)
with open({str(tmp_path / "out" / "summary.json")!r}) as handle:
  summary = json.load(handle)
result = {{"counts": summary["counts"], "engine": summary["engine"]["engine"]}}
"""
  result, _ = _child(code, tmp_path)
  assert result["counts"]["segmented"] == result["counts"]["read"] > 0 and result["engine"] == "openvino", result
  assert not result["tensorflow"] and not result["tf_modules"], result
