"""Whole against windowed reads of one large GeoTIFF, end to end: ``python -m bench.windowed [--size 8192]``.

Writes a ``size`` x ``size`` tiled, DEFLATE-compressed GeoTIFF (UTM 33N,
0.5 m) of the training generator's land-cover scenes, then runs the
pipeline on it with the bundled model twice, each in a fresh process:
``--windowed_read_mb 0`` (the whole scene is decoded first, as before) and
``--windowed_read_mb 1`` (read window by window as it is tiled). Reports each run's wall
time (process start included) and its peak RSS (``bench.procs``), and
checks that both masks hold the same pixels. docs/GEO.md quotes it.
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import rasterio

from bench.procs import child_env, peak_rss_mb, run_watched
from model.data.make_dataset import generate_example
from transforms.imaging.geo import north_up

BLOCK = 512


def write_scene(path: str, size: int):
  """A size x size RGB GeoTIFF of generator scenes (BLOCK-pixel tiles, DEFLATE), written block row by block row."""
  profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633")
  profile.update(transform=north_up(500_000, 6_650_000, 0.5, 0.5), photometric="RGB", compress="deflate")
  profile.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
  rng = np.random.default_rng(7)
  with rasterio.open(path, "w", **profile) as dataset:
    for top in range(0, size, BLOCK):
      for left in range(0, size, BLOCK):
        image, _ = generate_example(rng, size=BLOCK)
        window = rasterio.windows.Window(left, top, min(BLOCK, size - left), min(BLOCK, size - top))
        dataset.write(np.moveaxis(image[: window.height, : window.width], -1, 0), window=window)


def _run(scene: str, output: str, windowed_mb: int, size: int, model: str = None) -> dict:
  command = [sys.executable, "-m", "pipeline.run", "--input", scene, "--output", output]
  command += [f"--windowed_read_mb={windowed_mb}", f"--max_image_pixels={size * size}"]
  command += ["--model", model] if model else []
  watched = run_watched(command, env=child_env())
  if watched["returncode"] != 0:
    raise RuntimeError(watched["stderr_tail"])
  with open(os.path.join(output, "summary.json")) as handle:
    counts = json.load(handle)["counts"]
  if counts["segmented"] != 1:
    raise RuntimeError(f"the scene was not segmented: {counts}; see {output}/failures")
  return {"wall_s": round(watched["wall_s"], 1), "peak_rss_mb": round(peak_rss_mb(watched))}


def measure(size: int, workdir: str, scene: str = None, model: str = None) -> dict:
  """Both runs on ``scene`` (written at ``size`` when None) with ``model`` (the bundled one when None)."""
  if scene is None:
    os.makedirs(os.path.join(workdir, "in"))
    scene = os.path.join(workdir, "in", "scene.tif")
    write_scene(scene, size)
  with rasterio.open(scene) as dataset:
    size = max(dataset.height, dataset.width)
    decoded_mb = dataset.height * dataset.width * dataset.count / 2**20
  runs, masks = {}, {}
  for name, windowed_mb in (("whole", 0), ("windowed", 1)):
    output = os.path.join(workdir, name)
    runs[name] = _run(scene, output, windowed_mb, size, model)
    mask_name = os.path.basename(scene) + ".tif"
    with rasterio.open(os.path.join(output, "masks", mask_name)) as mask:
      masks[name] = mask.read(1)
  return {
    "size": size,
    "decoded_mb": round(decoded_mb),
    "file_mb": round(os.path.getsize(scene) / 2**20),
    "scene": scene,
    "runs": runs,
    "same_mask": bool(np.array_equal(masks["whole"], masks["windowed"])),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", type=int, default=8192)
  parser.add_argument("--scene", help="an existing GeoTIFF to use instead of writing one (16384^2 takes minutes)")
  parser.add_argument("--model", help="model directory (default: the bundled model)")
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as workdir:
    print(json.dumps(measure(args.size, workdir, args.scene, args.model), indent=2))


if __name__ == "__main__":
  main()
