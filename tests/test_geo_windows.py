"""Large GeoTIFFs read window by window (transforms/geo_windows.py, --windowed_read_mb).

The windowed path must give the outputs of the whole read, hold tiles rather
than the scene, work from gs://, and turn an unreadable window into a failure
of its image alone.
"""

import json
import tracemalloc

import numpy as np
import pytest
import rasterio
from fake_model import build_fake_model
from pipeline_helpers import check_accounting, read_outputs, run_pipeline, scene

from model.tiling import plan_tiles
from transforms import decode, geo_windows
from transforms.decode import DecodeSettings
from transforms.imaging.geo import north_up
from transforms.imaging.input_spec import InputSpec
from transforms.imaging.records import MASKS_DIR, OVERLAYS_DIR, STAGE_DECODE, ImageRef
from transforms.inference import SegmentationModelHandler, SegmenterHandle, TileImagesFn
from transforms.stitch import AssembleMaskFn

UTM_33N = "EPSG:32633"
TRANSFORM = north_up(500_000.0, 6_650_000.0, 0.5, 0.5)


def write_geotiff(path, pixels, block=256, **profile):
  """[H, W, K] pixels as a tiled, DEFLATE GeoTIFF in UTM 33N (photometric RGB for three bands)."""
  height, width, bands = pixels.shape
  options = dict(driver="GTiff", width=width, height=height, count=bands, dtype=pixels.dtype.name, crs=UTM_33N)
  options.update(transform=TRANSFORM, tiled=True, blockxsize=block, blockysize=block, compress="deflate")
  if bands == 3:
    options["photometric"] = "RGB"
  options.update(profile)
  path.parent.mkdir(parents=True, exist_ok=True)
  with rasterio.open(path, "w", **options) as dataset:
    dataset.write(np.moveaxis(pixels, -1, 0))
  return path


def multiband(height, width, seed=0):
  """4-band uint16 whose strongest band changes in blocks (the 4-band fake model's classes) with noise."""
  rgb = scene(height, width, seed=seed).astype(np.uint16)
  pixels = np.zeros((height, width, 4), np.uint16)
  pixels[:, :, :3] = rgb * 200
  pixels[:, :, 3] = 65535 - rgb.max(axis=2) * 200
  return pixels


@pytest.fixture
def windowed_reads(monkeypatch):
  """Counts the windows read through WindowedRaster, so a test knows the windowed path ran."""
  calls = []
  original = geo_windows.WindowedRaster._read

  def counting(self, rows, cols):
    calls.append((self.uri, rows, cols))
    return original(self, rows, cols)

  monkeypatch.setattr(geo_windows.WindowedRaster, "_read", counting)
  return calls


def _mask(output, key):
  with rasterio.open(output / MASKS_DIR / f"{key}.tif") as mask:
    return mask.read(1), mask.crs, mask.transform


def _records_without_paths(output):
  _, records, failures = read_outputs(str(output))
  assert not failures
  return {key: {k: v for k, v in record.items() if k not in ("mask", "overlay")} for key, record in records.items()}


@pytest.mark.slow
@pytest.mark.parametrize("bands", [3, 4], ids=["rgb-uint8", "4-band-uint16"])
def test_windowed_run_gives_the_whole_runs_outputs(tmp_path, fake_model, windowed_reads, bands):
  if bands == 3:
    model, pixels = fake_model, scene(900, 1300, seed=3)
  else:
    model, pixels = build_fake_model(str(tmp_path / "model4"), channels=4, dtype="uint16"), multiband(900, 1300, 3)
  write_geotiff(tmp_path / "in" / "big.tif", pixels)
  flags = ["--tile_size", "256", "--tile_overlap", "32", "--overlays"]
  run_pipeline(str(tmp_path / "in" / "*.tif"), tmp_path / "whole", model, *flags, "--windowed_read_mb", "0")
  assert not windowed_reads
  run_pipeline(str(tmp_path / "in" / "*.tif"), tmp_path / "windowed", model, *flags, "--windowed_read_mb", "1")
  tile_windows = [call for call in windowed_reads if call[1][2] == 1]
  assert len(tile_windows) >= 20, "tiles were read as windows"

  whole_ids, crs, transform = _mask(tmp_path / "whole", "big.tif")
  windowed_ids, windowed_crs, windowed_transform = _mask(tmp_path / "windowed", "big.tif")
  np.testing.assert_array_equal(windowed_ids, whole_ids)
  assert (windowed_crs, windowed_transform) == (crs, transform) == (rasterio.crs.CRS.from_string(UTM_33N), TRANSFORM)
  assert len(np.unique(whole_ids)) >= 3
  # Same records to the last digit: class pixels, areas, confidence, the display stretch's
  # and out-of-distribution features' strided sample.
  assert _records_without_paths(tmp_path / "windowed") == _records_without_paths(tmp_path / "whole")
  overlay = OVERLAYS_DIR + "/big.tif.png"
  assert (tmp_path / "windowed" / overlay).read_bytes() == (tmp_path / "whole" / overlay).read_bytes()


@pytest.mark.slow
def test_windowed_decode_holds_tiles_not_the_scene(tmp_path):
  """Decoding and tiling a 4000x3000 4-band uint16 scene (96 MB): numpy's peak stays a fraction of it."""
  path = write_geotiff(tmp_path / "scene.tif", multiband(3000, 4000, seed=1), block=512)
  spec = InputSpec(channels=4, dtype="uint16")
  ref = ImageRef(uri=str(path), key="scene.tif")
  scene_mb = 3000 * 4000 * 4 * 2 / 2**20
  peaks = {}
  for name, windowed_bytes in (("whole", 0), ("windowed", 1 << 20)):
    settings = DecodeSettings(max_image_pixels=10**9, spec=spec, windowed_bytes=windowed_bytes)
    tracemalloc.start()
    image, failure, _ = decode._decode_ref(ref, settings)
    assert failure is None
    tiles = 0
    for tile in TileImagesFn(512, 32).process(image):
      assert tile.error is None and tile.pixels.shape == (512, 512, 4)
      tiles += 1
    del image, tile
    peaks[name] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    assert tiles == len(plan_tiles(3000, 4000, 512, 32))
  assert peaks["whole"] > scene_mb, peaks
  assert peaks["windowed"] < scene_mb / 4, peaks


@pytest.mark.slow
def test_windowed_geotiff_from_cloud_storage(gcs_emulator, gcs_bucket, tmp_path, fake_model, windowed_reads):
  path = write_geotiff(tmp_path / "local" / "g.tif", scene(700, 900, seed=4))
  bucket = gcs_emulator.client().bucket(gcs_bucket)
  bucket.blob("in/g.tif").upload_from_filename(str(path))
  flags = ["--tile_size", "256", "--windowed_read_mb", "1"]
  run_pipeline(f"gs://{gcs_bucket}/in/*.tif", f"gs://{gcs_bucket}/out", fake_model, *flags)
  assert {call[0] for call in windowed_reads} == {f"gs://{gcs_bucket}/in/g.tif"}
  run_pipeline(str(path), tmp_path / "local_out", fake_model, *flags[:2], "--windowed_read_mb", "0")
  with rasterio.io.MemoryFile(bucket.blob("out/masks/g.tif.tif").download_as_bytes()) as memory:
    with memory.open() as mask:
      np.testing.assert_array_equal(mask.read(1), _mask(tmp_path / "local_out", "g.tif")[0])
  record = json.loads(next(bucket.list_blobs(prefix="out/stats/stats-")).download_as_bytes().decode().splitlines()[0])
  assert record["area_method"] == "projected" and record["crs"] == UTM_33N


def test_refused_and_truncated_windowed_geotiffs_fail_alone(tmp_path, fake_model):
  """Over --max_image_pixels, or cut short: each fails at decode with its reason; the rest completes."""
  whole = write_geotiff(tmp_path / "in" / "ok.tif", scene(600, 800, seed=5)).read_bytes()
  (tmp_path / "in" / "cut.tif").write_bytes(whole[: len(whole) // 2])
  write_geotiff(tmp_path / "in" / "huge.tif", np.zeros((1200, 1000, 3), np.uint8))
  output = tmp_path / "out"
  run_pipeline(
    str(tmp_path / "in" / "*.tif"), output, fake_model, "--windowed_read_mb", "1", "--max_image_pixels", "1000000"
  )
  summary, records, failures = read_outputs(str(output))
  check_accounting(summary, records, failures, expected_read=3)
  assert set(records) == {"ok.tif"}
  reasons = {failure["key"]: (failure["stage"], failure["message"]) for failure in failures}
  assert reasons["huge.tif"][0] == reasons["cut.tif"][0] == STAGE_DECODE
  assert "more than --max_image_pixels=1000000" in reasons["huge.tif"][1]
  assert "corrupt or truncated" in reasons["cut.tif"][1]


def test_a_window_unreadable_at_tiling_fails_its_image_at_decode(tmp_path, fake_model):
  """The file changes after decode: the unreadable tiles skip the model and the stitched image fails at decode."""
  path = write_geotiff(tmp_path / "scene.tif", scene(600, 800, seed=6))
  ref = ImageRef(uri=str(path), key="scene.tif")
  image, failure, _ = decode._decode_ref(ref, DecodeSettings(max_image_pixels=10**9, windowed_bytes=1))
  assert failure is None and isinstance(image.pixels, geo_windows.WindowedRaster)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 3])
  image.pixels.close()  # a fresh process would open the file as it is now
  tiles = list(TileImagesFn(256, 0).process(image))
  unreadable = [tile for tile in tiles if tile.error]
  assert unreadable and len(unreadable) < len(tiles)
  assert unreadable[0].error[2] == STAGE_DECODE and "cannot read tile" in unreadable[0].error[1]
  handle = SegmenterHandle(fake_model)
  handler = SegmentationModelHandler(handle, num_classes=4, max_batch_size=4)
  results = handler.run_inference(tiles, handle.acquire())
  assert sum(1 for result in results if result.error) == len(unreadable)
  outcome = list(AssembleMaskFn().process(("scene.tif", results)))
  assert len(outcome) == 1
  failed = outcome[0].value
  assert (failed.key, failed.stage) == ("scene.tif", STAGE_DECODE)
  assert f"{len(unreadable)} of {len(tiles)} tiles failed; first: cannot read tile" in failed.message
  assert "corrupt or truncated" in failed.message


@pytest.mark.slow
def test_windowed_bench_runs(tmp_path):
  """``python -m bench.windowed`` (docs/GEO.md) at a small size: both runs finish with the same mask."""
  from bench.windowed import measure

  result = measure(640, str(tmp_path))
  assert result["same_mask"]
  assert set(result["runs"]) == {"whole", "windowed"}
  assert all(run["peak_rss_mb"] > 0 for run in result["runs"].values())


def test_report_thumbnail_of_a_geotiff_is_read_decimated(tmp_path, monkeypatch):
  """The gallery never decodes a GeoTIFF whole: it reads a decimated overview of the right size and colours."""
  from pipeline.report import gallery

  pixels = scene(1500, 2000, seed=8)
  path = write_geotiff(tmp_path / "s.tif", pixels)
  small = geo_windows.overview(str(path), InputSpec(), 256)
  assert small.shape == (188, 250, 3) and small.dtype == np.uint8
  np.testing.assert_allclose(small.reshape(-1, 3).mean(axis=0), pixels.reshape(-1, 3).mean(axis=0), atol=4)

  def whole_read(*_):
    raise AssertionError("the source's bytes were read whole")

  monkeypatch.setattr(gallery, "_source_bytes", whole_read)
  thumbnail = gallery.load_source(str(path), 256, "image/encoded")
  assert thumbnail.size == (250, 188) and thumbnail.mode == "RGB"
