"""End to end on the FnApiRunner with models whose cards take other inputs than RGB uint8.

Fake models (tests/fake_model.py) with 1 or 4 bands at 8 or 16 bits classify
by a band rule whose numpy oracle is exact, so every mask must equal the rule
applied to the array the card says the model takes: grey and RGB into a
one-band model, narrow-range 16-bit grey kept at 16 bits, four-band 16-bit
TIFFs (contiguous and planar, one tiled), and an RGB PNG that a four-band
model cannot take failing alone.
"""

import base64
import html
import io
import re

import numpy as np
import pytest
import tifffile
from fake_model import build_fake_model, reference_segment
from PIL import Image
from pipeline_helpers import check_accounting, read_mask, read_outputs, scene

from pipeline.run import run
from transforms.imaging.display import blend_overlay, display_stretch, to_display
from transforms.imaging.records import OVERLAYS_DIR, REPORT_FILE

pytestmark = pytest.mark.slow
DARK16 = 1000


def _run(inputs, output, model, extra=()):
  run(
    ["--input", str(inputs), "--output", str(output), "--model", model, "--runner=FnApiRunner", *extra],
    save_main_session=False,
  )
  return read_outputs(str(output))


def band_scene(height, width, bands, seed, high):
  """Cells of random band levels in 0..high with noise: every class of the band rule shows up."""
  rng = np.random.default_rng(seed)
  cell = max(4, min(height, width) // 5)
  levels = rng.integers(0, high + 1, size=(height // cell + 1, width // cell + 1, bands))
  image = levels[np.arange(height)[:, None] // cell, np.arange(width)[None, :] // cell]
  image = image + rng.integers(-high // 20, high // 20 + 1, size=image.shape)
  return np.clip(image, 0, high).astype(np.uint16)


def test_one_band_uint8_model_takes_grey_and_rgb(tmp_path):
  model = build_fake_model(str(tmp_path / "model"), channels=1, dtype="uint8")
  folder = tmp_path / "in"
  folder.mkdir()
  rgb = scene(40, 50, seed=1)
  grey = np.asarray(Image.fromarray(scene(30, 20, seed=2)).convert("L"))
  Image.fromarray(rgb).save(folder / "colour.png")
  Image.fromarray(grey).save(folder / "grey.png")
  summary, records, failures = _run(folder / "*.png", tmp_path / "out", model)
  check_accounting(summary, records, failures, expected_read=2)
  assert failures == [] and [c["name"] for c in summary["classes"]] == ["dark", "band0"]
  luma = np.asarray(Image.fromarray(rgb).convert("L"))
  for key, source in (("colour.png", luma), ("grey.png", grey)):
    expected = reference_segment(source[:, :, None])
    assert 0 < expected.mean() < 1, "the image must hold both classes"
    np.testing.assert_array_equal(read_mask(str(tmp_path / "out"), key), expected)
    assert [c["pixels"] for c in records[key]["classes"]] == np.bincount(expected.ravel(), minlength=2).tolist()


def test_one_band_uint16_model_keeps_narrow_range_values(tmp_path):
  model = build_fake_model(str(tmp_path / "model"), channels=1, dtype="uint16", dark=DARK16)
  folder = tmp_path / "in"
  folder.mkdir()
  images = {f"sensor{i}.png": band_scene(48, 64, 1, seed=10 + i, high=4000)[:, :, 0] for i in range(2)}
  for name, values in images.items():
    Image.fromarray(values).save(folder / name)  # 16-bit grey PNG using only 0..4000
  summary, records, failures = _run(folder / "*.png", tmp_path / "out", model)
  check_accounting(summary, records, failures, expected_read=2)
  for key, values in images.items():
    expected = reference_segment(values[:, :, None], dark=DARK16)
    # Squeezed by 1/257 every value would be below 16 and every pixel dark.
    assert 0 < expected.mean() < 1
    np.testing.assert_array_equal(read_mask(str(tmp_path / "out"), key), expected)


def test_four_band_uint16_model_tiffs_overlays_and_report(tmp_path):
  model = build_fake_model(str(tmp_path / "model"), channels=4, dtype="uint16", dark=DARK16)
  folder = tmp_path / "in"
  folder.mkdir()
  small = band_scene(60, 80, 4, seed=20, high=65535)
  large = band_scene(150, 170, 4, seed=21, high=30000)  # > 4 x 64^2 pixels: cut into 64 x 64 tiles
  tifffile.imwrite(folder / "contiguous.tif", small, photometric="minisblack", planarconfig="contig")
  tifffile.imwrite(folder / "planar.tif", np.moveaxis(large, -1, 0), photometric="minisblack", planarconfig="separate")
  Image.fromarray(scene(20, 30, seed=22)).save(folder / "rgb.png")
  output = tmp_path / "out"
  summary, records, failures = _run(folder / "*", output, model, ["--tile_size=64", "--tile_overlap=16", "--overlays"])
  check_accounting(summary, records, failures, expected_read=3)
  assert summary["counts"] == {"read": 3, "segmented": 2, "failed": 1, "reused_existing": 0}
  assert len(failures) == 1
  failure = failures[0]
  assert (failure["key"], failure["stage"]) == ("rgb.png", "decode")
  assert failure["message"] == (
    "image has 3 bands (RGB) but the model takes 4 (card.json input.channels); "
    "give it 4-band images or use a model trained on 3"
  )
  palette = np.array([c["color"] for c in summary["model"]["card"]["classes"]], np.uint16)
  for key, bands in (("contiguous.tif", small), ("planar.tif", large)):
    expected = reference_segment(bands, dark=DARK16)
    assert len(np.unique(expected)) >= 4, "the image must exercise the band rule"
    np.testing.assert_array_equal(read_mask(str(output), key), expected)
    # The overlay of the tiled image equals one drawn from the whole image: one stretch, no seams.
    shown = to_display(bands, display_stretch(bands))
    with Image.open(output / OVERLAYS_DIR / f"{key}.png") as overlay:
      np.testing.assert_array_equal(np.asarray(overlay), blend_overlay(shown, expected, palette))
  document = (output / REPORT_FILE).read_text()
  figures = dict(re.findall(r'<figure class="sample" data-key="([^"]*)">(.*?)</figure>', document))
  assert set(map(html.unescape, figures)) == {"contiguous.tif", "planar.tif"}
  assert "unreadable" not in document
  for key, figure in figures.items():
    source = re.search(r'<img class="source"[^>]* src="data:image/jpeg;base64,([^"]*)"', figure).group(1)
    with Image.open(io.BytesIO(base64.b64decode(source))) as thumbnail:
      height, width = records[html.unescape(key)]["height"], records[html.unescape(key)]["width"]
      assert abs(thumbnail.size[0] / thumbnail.size[1] - width / height) < 0.05
      assert np.asarray(thumbnail.convert("L")).std() > 20, "a stretched picture, not a black square"
