"""Large work: an 8192 x 8192 image through tiling and stitching, and many images (bench.scale), with bounded memory."""

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image
from pipeline_helpers import REPO, check_accounting, direct_segmenter, read_mask, read_outputs, scene

pytestmark = pytest.mark.slow
SIDE = 8192


def test_8192_square_image(tmp_path, fake_model):
  # The session's fake model (only read here), so the engine's converted model is usually in the session's cache.
  model = fake_model
  pixels = scene(SIDE, SIDE, seed=5)
  (tmp_path / "in").mkdir()
  # zlib's run-length strategy: a PNG like any other to its reader (about 150 MiB), written in two thirds the time
  Image.fromarray(pixels).save(tmp_path / "in" / "huge.png", compress_level=1, compress_type=zlib.Z_RLE)
  output = tmp_path / "out"
  # A separate process, so its peak memory is the pipeline's alone. The peak is the kernel's
  # high-water mark of this process's own memory (VmHWM), not getrusage's ru_maxrss: a child
  # that Python's subprocess starts with vfork inherits the parent's ru_maxrss across exec,
  # so inside a full pytest run ru_maxrss reported the pytest process's 3.5 GiB, not the pipeline's.
  script = (
    "import sys\nfrom pipeline.run import main\ncode = main(sys.argv[1:])\n"
    "status = open('/proc/self/status').read()\n"
    "print('PEAK_KIB', status.split('VmHWM:')[1].split()[0])\nsys.exit(code)"
  )
  proc = subprocess.run(
    [
      sys.executable,
      "-c",
      script,
      "--input",
      str(tmp_path / "in" / "*.png"),
      "--output",
      str(output),
      "--model",
      model,
      "--tile_size=1024",
      "--tile_overlap=32",
      "--batch_size=4",
      "--png_compress_level=1",
    ],
    env=dict(os.environ, PYTHONPATH=REPO),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  peak_gib = int(proc.stdout.rsplit("PEAK_KIB", 1)[1].split()[0]) / 2**20
  print(f"pipeline process peak RSS: {peak_gib:.2f} GiB")
  summary, records, failures = read_outputs(str(output))
  check_accounting(summary, records, failures, expected_read=1)
  mask = read_mask(str(output), "huge.png")
  assert mask.shape == (SIDE, SIDE)
  # np.bincount's counts, without its 512 MiB int64 copy of the mask: one count per value up to the largest
  counts = [int(np.count_nonzero(mask == value)) for value in range(max(4, int(mask.max()) + 1))]
  assert counts == [c["pixels"] for c in records["huge.png"]["classes"]]
  # The fake model's receptive field is 2 pixels: a window segmented on its own with a
  # 2-pixel margin is exact, so windows across tile boundaries check the stitching.
  segmenter = direct_segmenter(model)
  for top, left in ((0, 0), (940, 940), (4000, 7000), (SIDE - 300, SIDE - 300)):
    y0, x0 = max(top - 2, 0), max(left - 2, 0)
    window = pixels[y0 : top + 302, x0 : left + 302]
    ids, _ = segmenter(window[None])
    np.testing.assert_array_equal(
      ids[0][top - y0 : top - y0 + 300, left - x0 : left - x0 + 300], mask[top : top + 300, left : left + 300]
    )
  # TensorFlow + Beam (~0.8 GiB); while decoding, the encoded file (160 MiB), Pillow's buffer and
  # the RGB array (192 MiB each); a batch of four 1024^2 tiles and the model's float
  # intermediates (512 MiB per early layer); the stitched mask (64 MiB). A leak of decoded
  # images or tile batches would cost far more than the margin.
  assert peak_gib < 3.0, f"peak RSS of the pipeline process {peak_gib:.2f} GiB"


def test_scale_run_memory_flat_and_outputs_complete(tmp_path):
  """The scaled-down `python -m bench.scale`: 200 vs 40 images, same process memory, every output.

  The full run (10,000 vs 2,000 images of 512x512, docs/PERFORMANCE.md) also checks that images/s
  stays the same; at this size the pipeline's ~1-2 s of fixed cost dominates, so only
  completeness and memory are checked here.
  """
  from bench.scale import run_scale

  report = run_scale(200, 40, size=128, workdir=str(tmp_path), pool=2)
  checks = report["checks"]
  for name, result in checks.items():
    if not name.startswith("images/s"):
      assert result["met"], (name, result)
  assert report["large"]["masks"] == report["large"]["records"] == 200
  assert report["large"]["io"]["read_bytes"] > 0
