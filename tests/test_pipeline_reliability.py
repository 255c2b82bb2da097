"""Bad inputs, inference faults and re-runs: every input ends segmented or failed, nothing twice."""

import os
import shutil
import struct
import zlib

import numpy as np
import pytest
from fake_model import build_fake_model
from PIL import Image
from pipeline_helpers import (
  check_accounting,
  encode,
  read_mask,
  read_outputs,
  run_pipeline,
  scene,
  write_mode_images,
  write_tfrecord,
)

from pipeline.run import run
from transforms.imaging.records import MASKS_DIR, OVERLAYS_DIR, STATS_DIR, SUMMARY_FILE

POISON = 13


def _png_chunk(kind, data):
  return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def decompression_bomb() -> bytes:
  """A valid PNG declaring 100000 x 100000 pixels in a few hundred bytes."""
  header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
  rows = zlib.compress(b"\0" * 1000)
  return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  return (
    build_fake_model(str(tmp_path_factory.mktemp("fake"))),
    build_fake_model(str(tmp_path_factory.mktemp("poisoned")), poison_value=POISON),
  )


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  folder = root / "in"
  good = set(write_mode_images(str(folder)))
  png, jpeg = encode(scene(60, 80, seed=3)), encode(scene(60, 80, seed=4), "JPEG", quality=90)
  failing = {
    "zero_bytes.png": b"",
    "truncated.png": png[: len(png) // 2],
    "truncated.jpg": jpeg[: len(jpeg) * 2 // 3],
    "random.jpg": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    "text.png": b"hello, I am a text file\n",
    "bomb.png": decompression_bomb(),
  }
  for name, data in failing.items():
    (folder / name).write_bytes(data)
  for name, (w, h) in {"one_pixel.png": (1, 1), "one_wide.png": (1, 40), "spaced name ü.png": (12, 9)}.items():
    Image.fromarray(scene(h, w, seed=w + h)).save(folder / name)
    good.add(name)
  shard = root / "shards" / "mixed.tfrecord"
  shard.parent.mkdir()
  write_tfrecord(
    str(shard),
    [
      ("../../outside.png", encode(scene(30, 30, seed=7))),
      ("/abs/path.png", encode(scene(30, 30, seed=8))),
      ("to be corrupted", encode(scene(30, 30, seed=9))),
      ("no image", None),
      ("unicode 名前 key.png", encode(scene(30, 30, seed=10))),
    ],
  )
  data = bytearray(shard.read_bytes())
  offset = 0
  for _ in range(2):
    offset += struct.unpack("<Q", data[offset : offset + 8])[0] + 16
  data[offset + 12 + 40] ^= 0xFF  # payload byte of record 2: its CRC no longer matches
  shard.write_bytes(bytes(data))
  good |= {"__/__/outside.png", "abs/path.png", "unicode 名前 key.png"}
  failing_keys = set(failing) | {"mixed/000002", "no image"}
  return root, ["--input", str(folder / "**"), "--tfrecord", str(shard)], good, failing_keys


@pytest.mark.slow
def test_bad_input_corpus(bad_corpus, models, tmp_path):
  root, argv, good, failing = bad_corpus
  output = tmp_path / "out"
  run(
    argv + ["--output", str(output), "--model", models[0], "--tile_size=32", "--tile_overlap=8"],
    save_main_session=False,
  )
  summary, records, failures = read_outputs(str(output))
  check_accounting(summary, records, failures, expected_read=len(good) + len(failing))
  assert set(records) == good
  by_key = {f["key"]: f for f in failures}
  assert set(by_key) == failing
  for failure in failures:
    assert failure["uri"] and failure["stage"] and failure["error_type"] and failure["message"]
  assert "empty" in by_key["zero_bytes.png"]["message"]
  assert "truncated" in by_key["truncated.png"]["message"]
  assert "not a recognised image format" in by_key["text.png"]["message"]
  assert "10000000000 pixels, more than --max_image_pixels" in by_key["bomb.png"]["message"]
  assert "CRC" in by_key["mixed/000002"]["message"] and by_key["mixed/000002"]["stage"] == "read"
  assert "image/encoded" in by_key["no image"]["message"]
  for path in (output / MASKS_DIR).rglob("*"):
    assert str(path.resolve()).startswith(str((output / MASKS_DIR).resolve()))


@pytest.mark.slow
def test_max_image_pixels_limit(bad_corpus, models, tmp_path):
  root, _, _, _ = bad_corpus
  output = tmp_path / "out"
  run_pipeline(root / "in" / "modes" / "*.png", output, models[0], "--max_image_pixels=1000")
  summary, records, failures = read_outputs(str(output))
  check_accounting(summary, records, failures)
  assert not records and failures
  assert all("max_image_pixels=1000" in f["message"] for f in failures)


def _poison_openvino(monkeypatch):
  """The OpenVINO engine fails a call holding an image that is entirely POISON, as the fake model's TF assertion does.

  OpenVINO's converter drops TensorFlow assertions, so the fault is injected into the engine itself.
  """
  from model.engines.openvino_engine import OpenVinoSegmenter

  original = OpenVinoSegmenter.predict

  def predict(self, images):
    if (images == POISON).all(axis=(1, 2, 3)).any():
      raise RuntimeError("poisoned input")
    return original(self, images)

  monkeypatch.setattr(OpenVinoSegmenter, "predict", predict)


# The OpenVINO case converts the poisoned model to an IR first.
@pytest.mark.parametrize("engine", ["tensorflow", pytest.param("openvino", marks=pytest.mark.slow)])
def test_inference_fault_fails_only_its_image(models, tmp_path, engine, monkeypatch):
  if engine == "openvino":
    _poison_openvino(monkeypatch)
  folder = tmp_path / "in"
  folder.mkdir()
  for i in range(6):
    Image.fromarray(scene(20, 24, seed=i)).save(folder / f"good_{i}.png")
  Image.fromarray(np.full((20, 24, 3), POISON, np.uint8)).save(folder / "poison_small.png")
  big = scene(100, 100, seed=9)
  big[:40, :40] = POISON  # the first 32x32 tile is entirely the poison value
  Image.fromarray(big).save(folder / "poison_tile.png")
  output = tmp_path / "out"
  run_pipeline(
    folder / "*", output, models[1], "--batch_size=8", "--tile_size=32", "--tile_overlap=8", f"--engine={engine}"
  )
  summary, records, failures = read_outputs(str(output))
  assert summary["engine"]["engine"] == engine
  check_accounting(summary, records, failures, expected_read=8)
  assert set(records) == {f"good_{i}.png" for i in range(6)}
  assert {f["key"]: f["stage"] for f in failures} == {"poison_small.png": "inference", "poison_tile.png": "inference"}
  assert "poisoned input" in {f["key"]: f for f in failures}["poison_small.png"]["message"]


@pytest.mark.slow
@pytest.mark.parametrize("skip_existing", [True, False])
def test_rerun_after_interruption(bad_corpus, models, tmp_path, skip_existing):
  root, argv, good, failing = bad_corpus
  output = tmp_path / "out"
  args = argv + ["--output", str(output), "--model", models[0], "--tile_size=32", "--tile_overlap=8"]
  run(args, save_main_session=False)
  first_summary, first_records, _ = read_outputs(str(output))
  first_masks = {key: read_mask(str(output), key) for key in first_records}
  # What a run killed half-way leaves: some masks, a stray temporary object, no summary.
  for key in sorted(first_records)[::2]:
    os.remove(output / MASKS_DIR / f"{key}.png")
  (output / ".tmp").mkdir()
  (output / ".tmp" / ("ab" * 16)).write_bytes(b"\x89PNG partial")  # an atomic write's temporary name
  os.remove(output / SUMMARY_FILE)
  shutil.rmtree(output / STATS_DIR)
  run(args + (["--skip_existing"] if skip_existing else []), save_main_session=False)
  summary, records, failures = read_outputs(str(output))
  check_accounting(summary, records, failures, expected_read=len(good) + len(failing))
  assert records == first_records
  assert summary["classes"] == first_summary["classes"]
  removed = len(sorted(first_records)[::2])
  assert summary["counts"]["reused_existing"] == (len(first_records) - removed if skip_existing else 0)
  for key, mask in first_masks.items():
    np.testing.assert_array_equal(read_mask(str(output), key), mask)
  written = {str(p.relative_to(output / MASKS_DIR))[:-4] for p in (output / MASKS_DIR).rglob("*.png")}
  assert written == good
  assert not (output / ".tmp").exists()


@pytest.mark.slow
def test_skip_existing_with_overlays_fills_in_missing_overlays(fake_model, tmp_path):
  """Re-running with --overlays --skip_existing over a run made without overlays redoes only what lacks one."""
  inputs = tmp_path / "in"
  inputs.mkdir()
  for i in range(3):
    Image.fromarray(scene(30, 40, seed=70 + i)).save(inputs / f"img{i}.png")
  output = tmp_path / "out"
  args = ["--input", str(inputs / "*.png"), "--output", str(output), "--model", fake_model]
  run(args, save_main_session=False)
  assert not (output / OVERLAYS_DIR).exists()

  run(args + ["--skip_existing", "--overlays"], save_main_session=False)
  summary, records, _ = read_outputs(str(output))
  assert summary["counts"]["segmented"] == 3 and summary["counts"]["reused_existing"] == 0
  assert sorted(p.name for p in (output / OVERLAYS_DIR).iterdir()) == ["img0.png.png", "img1.png.png", "img2.png.png"]

  os.remove(output / OVERLAYS_DIR / "img1.png.png")
  run(args + ["--skip_existing", "--overlays"], save_main_session=False)
  summary, _, _ = read_outputs(str(output))
  assert summary["counts"]["segmented"] == 3 and summary["counts"]["reused_existing"] == 2
  assert (output / OVERLAYS_DIR / "img1.png.png").exists()
