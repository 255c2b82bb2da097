"""Shared helpers for the pipeline tests: input corpora, running, reading outputs."""

import glob
import io
import json
import os
import weakref

import numpy as np
from PIL import Image, TiffImagePlugin

from transforms.imaging.records import MASKS_DIR, STATS_DIR, SUMMARY_FILE

# The repository root: the one definition the tests use (tests/ sits directly under it).
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_MODEL = os.path.join(REPO, "model", "default")


def direct_segmenter(model_dir: str, engine: str = "auto", precision: str = "fp32"):
  """The model loaded on the engine a run with these flags gets on this machine: the oracle for its masks."""
  from model import engines
  from transforms.imaging.input_spec import InputSpec

  with open(os.path.join(model_dir, "card.json")) as handle:
    spec = InputSpec.from_card(json.load(handle))
  return engines.load(model_dir, engines.choose_here(model_dir, engine, precision), spec)


def scene(height: int, width: int, seed: int = 0) -> np.ndarray:
  """RGB uint8 picture with large colour regions, dark areas and some noise.

  Coloured one band of rows at a time (the rows of one grid row) rather than through whole-image index, colour
  and clip arrays: at 8192^2 (tests/test_pipeline_large.py) those were about 1.3 GiB of fresh memory, and first
  touching fresh memory made the picture a third of that test's time. The pixels are the same either way.
  """
  rng = np.random.default_rng(seed)
  palette = np.array([[200, 40, 30], [30, 180, 50], [40, 60, 210], [20, 20, 25], [150, 150, 60]], np.int16)
  cell = max(4, min(height, width) // 5)
  grid = rng.integers(0, len(palette), size=(height // cell + 2, width // cell + 2))
  offset_y, offset_x = rng.integers(0, cell, size=2)
  rows = (np.arange(height) + offset_y) // cell
  cols = (np.arange(width) + offset_x) // cell
  noise = rng.integers(-25, 26, size=(height, width, 3), dtype=np.int16)
  image = np.empty((height, width, 3), np.uint8)
  for grid_row in np.unique(rows):
    band = np.flatnonzero(rows == grid_row)  # consecutive rows: rows is non-decreasing
    colours = noise[band[0] : band[-1] + 1] + palette[grid[grid_row, cols]]
    image[band[0] : band[-1] + 1] = np.clip(colours, 0, 255, out=colours)
  return image


def _save(image: Image.Image, path: str, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path, **kwargs)
  return path


def write_mode_images(folder: str, base: int = 0):
  """One file per Pillow mode / format the pipeline promises; returns {relative path: (w, h)}."""
  rgb = Image.fromarray(scene(70, 90, seed=base + 1))
  made = {}

  def add(name, image, **kwargs):
    _save(image, os.path.join(folder, name), **kwargs)
    made[name] = image.size

  add("modes/mode_1.png", rgb.convert("1"))
  add("modes/mode_L.png", rgb.convert("L"))
  add("modes/mode_LA.png", rgb.convert("LA"))
  add("modes/mode_P.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16))
  transparent = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
  transparent.info["transparency"] = 0
  add("modes/mode_P_transparent.png", transparent, transparency=0)
  add("modes/mode_RGB.bmp", rgb)
  add("modes/mode_RGBA.png", rgb.convert("RGBA"))
  add("modes/mode_CMYK.jpg", rgb.convert("CMYK"), quality=95)
  grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
  add("modes/mode_I16.png", Image.fromarray(grey.astype(np.uint16)))
  add("modes/mode_I.tif", Image.fromarray(grey.astype(np.int32)))
  add("modes/mode_F.tif", Image.fromarray(grey.astype(np.float32) / 65535.0))
  add("modes/photo.webp", rgb, quality=90)
  frames = [rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=32), Image.new("P", rgb.size, 0)]
  add("modes/animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0)
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90° clockwise when displayed
  rotated = Image.fromarray(scene(40, 100, seed=base + 2))
  _save(rotated, os.path.join(folder, "modes/exif_rotated.jpg"), exif=exif.tobytes(), quality=95)
  made["modes/exif_rotated.jpg"] = (40, 100)
  geo = TiffImagePlugin.ImageFileDirectory_v2()
  geo[33550] = (0.5, 0.5, 0.0)
  add("modes/geo.tif", Image.fromarray(scene(50, 60, seed=base + 3)), tiffinfo=geo)
  return made


def write_tfrecord(path: str, records, gzip: bool = False):
  """records: iterable of (key or None, encoded bytes or None)."""
  import tensorflow as tf

  options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
  with tf.io.TFRecordWriter(path, options=options) as writer:
    for key, data in records:
      feature = {}
      if data is not None:
        feature["image/encoded"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
      if key is not None:
        feature["image/key"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode("utf-8")]))
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def encode(pixels: np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def run_pipeline(inputs, output, model, *flags):
  """Runs the pipeline in this process: --input inputs --output output --model model, then any further flags."""
  from pipeline.run import run

  argv = ["--input", str(inputs), "--output", str(output), "--model", str(model), *flags]
  return run(argv, save_main_session=False)


def read_outputs(output: str):
  """(summary, {key: stats record}, [failure records]) of the run that wrote summary.json: its own record files."""
  with open(os.path.join(output, SUMMARY_FILE)) as f:
    summary = json.load(f)
  records = {}
  for record in read_jsonl(summary["outputs"]["stats"]):
    assert record["key"] not in records, f"duplicate stats record for {record['key']}"
    records[record["key"]] = record
  return summary, records, read_jsonl(summary["outputs"]["failures"])


def read_jsonl(paths) -> list:
  """The records of JSON Lines files, in order."""
  rows = []
  for path in paths:
    with open(path) as f:
      rows += [json.loads(line) for line in f]
  return rows


def folder_records(output: str, folder: str = STATS_DIR) -> list:
  """Every record of every run in OUT/<folder> (JSON Lines), as a reader of the whole folder sees them."""
  return read_jsonl(sorted(glob.glob(os.path.join(output, folder, "*.jsonl"))))


def read_mask(output: str, key: str) -> np.ndarray:
  with Image.open(os.path.join(output, MASKS_DIR, key + ".png")) as image:
    assert image.mode == "P"
    return np.asarray(image)


def check_accounting(summary, records, failures, expected_read=None):
  """The invariants every run must satisfy."""
  counts = summary["counts"]
  assert counts["segmented"] == len(records)
  assert counts["failed"] == len(failures)
  assert counts["read"] == counts["segmented"] + counts["failed"]
  if expected_read is not None:
    assert counts["read"] == expected_read
  for i, entry in enumerate(summary["classes"]):
    assert entry["pixels"] == sum(r["classes"][i]["pixels"] for r in records.values())
  assert summary["pixels"] == sum(r["width"] * r["height"] for r in records.values())


def output_problems(out, temporaries: bool = True) -> list:
  """Files under OUT that are half-written, and (``temporaries``) temporary ones; Beam's ``beam-temp-*`` sink folders aside."""
  found = []
  for folder, dirs, names in os.walk(out):
    dirs[:] = [d for d in dirs if not d.startswith("beam-temp-")]
    for name in names:
      path = os.path.join(folder, name)
      relative = os.path.relpath(path, out)
      try:
        if relative.startswith(".tmp" + os.sep) or name.endswith(".tmp"):
          if temporaries:
            found.append(f"temporary file left: {relative}")
        elif name.endswith(".png"):
          with Image.open(path) as image:
            image.verify()  # every chunk's CRC, up to IEND
          with Image.open(path) as image:
            image.load()
        elif name.endswith((".json", ".geojson")):
          with open(path) as handle:
            json.load(handle)
        elif name.endswith(".jsonl"):
          with open(path) as handle:
            text = handle.read()
          assert not text or text.endswith("\n"), "last line cut"
          [json.loads(line) for line in text.splitlines()]
        elif name.endswith(".html"):
          with open(path) as handle:
            assert handle.read().rstrip().endswith("</html>"), "cut short"
      except Exception as exc:
        found.append(f"half-written: {relative}: {exc}")
  return found


def count_loads(monkeypatch):
  """(model directories loaded, weak references to the loaded models), for this process."""
  from model import engines

  loads, models = [], []
  original = engines.load

  def counting_load(model_dir, *args, **kwargs):
    loads.append(model_dir)
    model = original(model_dir, *args, **kwargs)
    models.append(weakref.ref(model))
    return model

  monkeypatch.setattr(engines, "load", counting_load)
  return loads, models
