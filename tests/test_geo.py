"""GeoTIFF inputs end to end: georeferenced masks, areas in real units, polygons (transforms/imaging/geo.py).

The inputs are GeoTIFFs made here with rasterio; the fake model (tests/fake_model.py) classifies
by colour, so a scene of coloured blocks gives regions that cross tile seams.
"""

import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from PIL import Image
from pipeline_helpers import REPO, check_accounting, read_outputs, scene
from rasterio.io import MemoryFile
from shapely.geometry import shape
from skimage.measure import label

from model.tiling import plan_tiles
from pipeline.errors import OptionsError
from pipeline.run import run
from transforms.imaging import geo
from transforms.imaging.geo import north_up
from transforms.imaging.records import MASKS_DIR, POLYGONS_DIR

UTM_33N = "EPSG:32633"
UTM_ORIGIN = (500_000.0, 6_650_000.0)
WGS84 = "EPSG:4326"


def blocks(height, width, seed=0):
  """RGB uint8 of large coloured blocks (about a fifth of the short side) with noise."""
  return scene(height, width, seed=seed)


def write_geotiff(path, pixels, crs, transform, **profile):
  """[H, W, K] pixels to a GeoTIFF at ``path`` (photometric RGB for three bands)."""
  height, width, bands = pixels.shape
  options = dict(driver="GTiff", width=width, height=height, count=bands, dtype=pixels.dtype.name, crs=crs)
  options.update(transform=transform, **profile)
  if bands == 3:
    options["photometric"] = "RGB"
  path.parent.mkdir(parents=True, exist_ok=True)
  with rasterio.open(path, "w", **options) as dataset:
    dataset.write(np.moveaxis(pixels, -1, 0))
  return path


def _run(inputs, output, model, *extra):
  return run(
    ["--input", *inputs, "--output", str(output), "--model", model, "--runner=FnApiRunner", *extra],
    save_main_session=False,
  )


def _polygons(output, key):
  with open(output / POLYGONS_DIR / f"{key}.geojson") as f:
    return json.load(f)


def _polygon_area_by_class(collection):
  areas = {}
  for feature in collection["features"]:
    name = feature["properties"]["class_name"]
    areas[name] = areas.get(name, 0.0) + feature["properties"]["area"]
  return areas


def _components(mask):
  """Connected regions per class, 4-connected as rasterio.features.shapes draws them."""
  return sum(int(label(mask == value, connectivity=1).max()) for value in np.unique(mask))


@pytest.fixture(scope="module")
def projected_run(tmp_path_factory, fake_model):
  """One 600x400 RGB GeoTIFF in UTM 33N with 0.5 m pixels, run with --polygons (and once as PNG)."""
  root = tmp_path_factory.mktemp("projected")
  transform = north_up(*UTM_ORIGIN, 0.5, 0.5)
  write_geotiff(root / "in" / "scene.tif", blocks(400, 600), UTM_33N, transform)
  output = root / "out"
  _run([str(root / "in" / "*.tif")], output, fake_model, "--polygons")
  as_png = root / "png"
  _run([str(root / "in" / "*.tif")], as_png, fake_model, "--mask_format", "png")
  return root, output, as_png, transform


def test_geotiff_mask_has_the_inputs_crs_transform_size_palette_and_names(projected_run):
  root, output, as_png, transform = projected_run
  assert not (output / MASKS_DIR / "scene.tif.png").exists()
  with rasterio.open(output / MASKS_DIR / "scene.tif.tif") as mask:
    assert mask.crs.to_epsg() == 32633
    assert mask.transform == transform
    assert (mask.width, mask.height, mask.count, mask.dtypes[0]) == (600, 400, 1, "uint8")
    assert mask.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert mask.block_shapes[0] == (512, 512)
    assert json.loads(mask.tags()["CLASS_NAMES"]) == ["dark", "red", "green", "blue"]
    assert mask.colormap(1)[1] == (220, 40, 40, 255)
    pixels = mask.read(1)
  with Image.open(as_png / MASKS_DIR / "scene.tif.png") as png:
    assert np.array_equal(pixels, np.asarray(png)), "the GeoTIFF holds exactly the PNG's class ids"


def test_projected_areas_are_pixels_times_the_pixel_area(projected_run):
  _, output, _, _ = projected_run
  summary, records, failures = read_outputs(str(output))
  check_accounting(summary, records, failures, expected_read=1)
  record = records["scene.tif"]
  assert (record["crs"], record["area_method"], record["area_unit"]) == ("EPSG:32633", "projected", "m^2")
  assert record["mask"].endswith("masks/scene.tif.tif")
  for entry in record["classes"]:
    assert entry["area"] == pytest.approx(entry["pixels"] * 0.25, rel=1e-12)
  assert summary["crs"] == ["EPSG:32633"] and summary["area_methods"] == {"projected": 1}
  assert summary["area_unit"] == "m^2"


def test_polygons_cover_each_class_and_say_their_crs(projected_run):
  _, output, _, _ = projected_run
  _, records, _ = read_outputs(str(output))
  collection = _polygons(output, "scene.tif")
  assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
  assert collection["area_unit"] == "m^2"
  by_class = _polygon_area_by_class(collection)
  for entry in records["scene.tif"]["classes"]:
    if entry["pixels"]:
      assert by_class[entry["name"]] == pytest.approx(entry["area"], rel=0.005)
  xs = [x for feature in collection["features"] for ring in feature["geometry"]["coordinates"] for x, _ in ring]
  assert min(xs) == UTM_ORIGIN[0] and max(xs) == UTM_ORIGIN[0] + 300.0, "polygons lie where the image lies"
  assert records["scene.tif"]["polygon_count"] == len(collection["features"])


def _geodesic_band_area(lat1, lat2, dlon_deg, a=6378137.0, f=1 / 298.257223563):
  """Area (m²) of the WGS 84 ellipsoid between two parallels over dlon, from the authalic latitude formula."""
  e = math.sqrt(f * (2 - f))
  b = a * (1 - f)

  def q(lat):
    s = math.sin(math.radians(lat))
    return s / (1 - e * e * s * s) + math.log((1 + e * s) / (1 - e * s)) / (2 * e)

  return abs(b * b * math.radians(dlon_deg) / 2 * (q(lat2) - q(lat1)))


def test_geographic_crs_gets_geodesic_areas(tmp_path, fake_model):
  """EPSG:4326 at 60 deg N: each row's pixels measured on the ellipsoid, not pixels x degrees^2."""
  step = 1e-4  # degrees: about 5.6 m east-west and 11 m north-south at 60 deg N
  write_geotiff(tmp_path / "in" / "in.tif", blocks(300, 400, seed=3), WGS84, north_up(10.0, 60.02, step, step))
  output = tmp_path / "out"
  _run([str(tmp_path / "in" / "in.tif")], output, fake_model)
  _, records, _ = read_outputs(str(output))
  record = records["in.tif"]
  assert (record["crs"], record["area_method"], record["area_unit"]) == ("EPSG:4326", "geodesic", "m^2")
  with rasterio.open(output / MASKS_DIR / "in.tif.tif") as mask:
    assert mask.crs.to_epsg() == 4326
    ids = mask.read(1)
  row_area = [_geodesic_band_area(60.02 - step * row, 60.02 - step * (row + 1), step) for row in range(ids.shape[0])]
  for entry in record["classes"]:
    expected = float(np.count_nonzero(ids == entry["id"], axis=1) @ np.array(row_area))
    if entry["pixels"]:
      assert entry["area"] == pytest.approx(expected, rel=1e-3)
      assert entry["area"] > 1000 * entry["pixels"] * step * step, "not pixels times square degrees"


@pytest.mark.slow
def test_tiled_scene_keeps_its_georeference_and_polygons_cross_the_seams(tmp_path, fake_model):
  """3000x2000 in 512-pixel tiles: the stitched mask is exact, and no polygon edge runs along a seam."""
  transform = north_up(*UTM_ORIGIN, 0.5, 0.5)
  write_geotiff(
    tmp_path / "in" / "big.tif", blocks(2000, 3000, seed=5), UTM_33N, transform, tiled=True, compress="deflate"
  )
  output = tmp_path / "out"
  tiling = ("--tile_size", "512", "--tile_overlap", "32", "--whole_image_pixels", "0")
  _run([str(tmp_path / "in" / "big.tif")], output, fake_model, "--polygons", *tiling)
  summary, records, failures = read_outputs(str(output))
  check_accounting(summary, records, failures, expected_read=1)
  with rasterio.open(output / MASKS_DIR / "big.tif.tif") as mask:
    assert (mask.crs.to_epsg(), mask.transform, mask.shape) == (32633, transform, (2000, 3000))
    assert mask.overviews(1), "a large scene gets overviews"
    ids = mask.read(1)
  tiles = plan_tiles(2000, 3000, 512, 32, 0)
  assert len(tiles) > 1
  seams_x = sorted({t.own_left for t in tiles} - {0})
  seams_y = sorted({t.own_top for t in tiles} - {0})
  collection = _polygons(output, "big.tif")
  assert len(collection["features"]) == _components(ids), "one polygon per connected region"
  to_col = lambda x: round((x - UTM_ORIGIN[0]) / 0.5)  # noqa: E731
  to_row = lambda y: round((UTM_ORIGIN[1] - y) / 0.5)  # noqa: E731
  for feature in collection["features"]:
    for ring in feature["geometry"]["coordinates"]:
      for (x1, y1), (x2, y2) in zip(ring, ring[1:]):
        c1, r1, c2, r2 = to_col(x1), to_row(y1), to_col(x2), to_row(y2)
        if c1 == c2 and c1 in seams_x:  # a vertical edge on a seam column: classes must differ across it
          rows = slice(min(r1, r2), max(r1, r2))
          assert np.all(ids[rows, c1 - 1] != ids[rows, c1]), f"polygon edge along the seam x={c1}"
        if r1 == r2 and r1 in seams_y:
          cols = slice(min(c1, c2), max(c1, c2))
          assert np.all(ids[r1 - 1, cols] != ids[r1, cols]), f"polygon edge along the seam y={r1}"
  by_class = _polygon_area_by_class(collection)
  for entry in records["big.tif"]["classes"]:
    if entry["pixels"]:
      assert by_class[entry["name"]] == pytest.approx(entry["area"], rel=0.005)


def test_plain_images_get_pixel_polygons_and_png_masks(tmp_path, fake_model):
  (tmp_path / "in").mkdir()
  Image.fromarray(blocks(120, 160, seed=7)).save(tmp_path / "in" / "plain.png")
  output = tmp_path / "out"
  _run([str(tmp_path / "in" / "plain.png")], output, fake_model, "--polygons", "--min_polygon_area", "20")
  _, records, _ = read_outputs(str(output))
  assert (output / MASKS_DIR / "plain.png.png").exists()
  record = records["plain.png"]
  assert record["crs"] is None and record["area_unit"] is None
  collection = _polygons(output, "plain.png")
  assert collection["coordinates"].startswith("pixel") and "crs" not in collection
  assert collection["area_unit"] == "pixel"
  assert all(feature["properties"]["area"] >= 20 for feature in collection["features"])
  kept = sum(feature["properties"]["area"] for feature in collection["features"])
  assert kept <= 160 * 120


def test_simplify_keeps_a_coverage(tmp_path, fake_model):
  """--simplify drops vertices but neighbours keep sharing edges: no gaps, no overlaps."""
  write_geotiff(tmp_path / "in" / "s.tif", blocks(200, 300, seed=9), UTM_33N, north_up(*UTM_ORIGIN, 0.5, 0.5))
  _run([str(tmp_path / "in" / "s.tif")], tmp_path / "exact", fake_model, "--polygons")
  _run([str(tmp_path / "in" / "s.tif")], tmp_path / "simple", fake_model, "--polygons", "--simplify", "2")

  def vertices(collection):
    return sum(len(ring) for f in collection["features"] for ring in f["geometry"]["coordinates"])

  simple = _polygons(tmp_path / "simple", "s.tif")
  assert vertices(simple) < vertices(_polygons(tmp_path / "exact", "s.tif"))
  shapes = [shape(feature["geometry"]) for feature in simple["features"]]
  assert shapely.union_all(shapes).area == pytest.approx(150.0 * 100.0, rel=1e-6), "no gaps between polygons"
  assert sum(s.area for s in shapes) == pytest.approx(150.0 * 100.0, rel=1e-6), "no overlaps"


@pytest.mark.slow
def test_multiband_geotiff_reaches_a_four_band_model(tmp_path):
  from fake_model import build_fake_model

  model = build_fake_model(str(tmp_path / "model4"), channels=4, dtype="uint16")
  rng = np.random.default_rng(1)
  pixels = np.zeros((64, 96, 4), np.uint16)
  pixels[:, :48, 2] = 60000  # left half: band 2 dominates
  pixels[:, 48:, 3] = 60000
  pixels += rng.integers(0, 500, size=pixels.shape, dtype=np.uint16)
  write_geotiff(tmp_path / "in" / "ms.tif", pixels, UTM_33N, north_up(*UTM_ORIGIN, 10.0, 10.0))
  output = tmp_path / "out"
  _run([str(tmp_path / "in" / "ms.tif")], output, model)
  _, records, failures = read_outputs(str(output))
  assert not failures
  with rasterio.open(output / MASKS_DIR / "ms.tif.tif") as mask:
    ids = mask.read(1)
  assert np.all(ids[:, :40] == 3) and np.all(ids[:, 56:] == 4)
  assert records["ms.tif"]["classes"][3]["area"] == pytest.approx(np.count_nonzero(ids == 3) * 100.0)


def test_skip_existing_reads_records_back_from_geotiff_masks(tmp_path, fake_model):
  write_geotiff(tmp_path / "in" / "a.tif", blocks(100, 100, seed=2), UTM_33N, north_up(*UTM_ORIGIN, 0.5, 0.5))
  output = tmp_path / "out"
  _run([str(tmp_path / "in" / "a.tif")], output, fake_model, "--polygons")
  first = read_outputs(str(output))[1]["a.tif"]
  _run([str(tmp_path / "in" / "a.tif")], output, fake_model, "--polygons", "--skip_existing")
  summary, records, _ = read_outputs(str(output))
  assert summary["counts"]["reused_existing"] == 1
  assert records["a.tif"] == first


def test_geotiff_in_and_out_of_cloud_storage(gcs_emulator, gcs_bucket, tmp_path, fake_model):
  write_geotiff(tmp_path / "g.tif", blocks(150, 200, seed=4), UTM_33N, north_up(*UTM_ORIGIN, 0.5, 0.5))
  bucket = gcs_emulator.client().bucket(gcs_bucket)
  bucket.blob("in/g.tif").upload_from_filename(str(tmp_path / "g.tif"))
  output = f"gs://{gcs_bucket}/out"
  _run([f"gs://{gcs_bucket}/in/*.tif"], output, fake_model, "--polygons")
  with MemoryFile(bucket.blob("out/masks/g.tif.tif").download_as_bytes()) as memory, memory.open() as mask:
    assert (mask.crs.to_epsg(), mask.shape) == (32633, (150, 200))
    assert mask.transform == north_up(*UTM_ORIGIN, 0.5, 0.5)
  collection = json.loads(bucket.blob("out/polygons/g.tif.geojson").download_as_bytes())
  assert collection["features"] and collection["area_unit"] == "m^2"
  record = json.loads(next(bucket.list_blobs(prefix="out/stats/stats-")).download_as_bytes().decode().splitlines()[0])
  assert record["area_method"] == "projected"


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--simplify", "1"], "--simplify only applies to polygons: add --polygons"),
    (["--polygon_format", "geoparquet"], "--polygon_format only applies to polygons: add --polygons"),
    (["--polygons", "--min_polygon_area", "-1"], "--min_polygon_area=-1.0 must be a number >= 0"),
    (["--mask_format", "jpeg"], "invalid choice: 'jpeg'"),
    (["--windowed_read_mb", "-1"], "--windowed_read_mb=-1 is out of range: it must be at least 0."),
  ],
)
def test_bad_geo_flags_stop_the_run_before_work(tmp_path, fake_model, flags, message, capsys):
  (tmp_path / "in").mkdir()
  Image.fromarray(blocks(32, 32)).save(tmp_path / "in" / "x.png")
  with pytest.raises((OptionsError, SystemExit)) as raised:
    _run([str(tmp_path / "in" / "x.png")], tmp_path / "out", fake_model, *flags)
  text = str(raised.value) + capsys.readouterr().err
  assert message in text
  assert not (tmp_path / "out" / MASKS_DIR).exists()


def test_geo_outputs_without_the_geo_extra_say_how_to_install_it(tmp_path, fake_model, monkeypatch):
  (tmp_path / "in").mkdir()
  Image.fromarray(blocks(32, 32)).save(tmp_path / "in" / "x.png")
  monkeypatch.setattr(geo, "available", lambda: False)
  with pytest.raises(OptionsError, match=r"--polygons need the geo extra .*pip install .*\[geo\]"):
    _run([str(tmp_path / "in" / "x.png")], tmp_path / "out", fake_model, "--polygons")


def test_report_shows_hectares_and_each_images_crs(projected_run):
  from pipeline.report.render import build_report

  _, output, _, _ = projected_run
  html = build_report(str(output))
  assert "area (ha)" in html
  assert "Coordinate reference systems of the images: EPSG:32633" in html
  assert '<span class="crs">EPSG:32633</span>' in html


def test_geo_cost_bench_runs():
  from bench import geo as geo_bench

  rows = dict(geo_bench.measure(size=256, repeat=1))
  assert set(rows) >= {"mask as palette PNG", "mask as Cloud-Optimized GeoTIFF", "--polygons, geographic"}
  assert all(ms > 0 for ms in rows.values())


def test_evaluate_scores_geotiff_masks_against_geotiff_truth(projected_run, tmp_path):
  """python -m pipeline.evaluate reads GeoTIFF masks (the record names them) and GeoTIFF truth masks."""
  from pipeline.evaluate import evaluate

  root, output, _, transform = projected_run
  with rasterio.open(output / MASKS_DIR / "scene.tif.tif") as mask:
    ids = mask.read(1)
  truth = ids.copy()
  truth[:10] = (truth[:10] + 1) % 4  # ten wrong rows of 400
  write_geotiff(tmp_path / "truth" / "scene.tif", truth[:, :, None], UTM_33N, transform)
  result = evaluate(str(output), [str(tmp_path / "truth" / "*.tif")])
  assert result["truth"]["images_with_truth"] == 1
  assert result["truth"]["pixel_accuracy"] == pytest.approx(390 / 400)


def test_polygons_as_geoparquet(tmp_path, fake_model):
  """--polygon_format geoparquet: WKB geometry, GeoParquet 'geo' metadata with the CRS, the same areas."""
  import pyarrow.parquet as pq

  write_geotiff(tmp_path / "in" / "p.tif", blocks(120, 160, seed=11), UTM_33N, north_up(*UTM_ORIGIN, 0.5, 0.5))
  output = tmp_path / "out"
  _run([str(tmp_path / "in" / "p.tif")], output, fake_model, "--polygons", "--polygon_format", "geoparquet")
  _, records, _ = read_outputs(str(output))
  record = records["p.tif"]
  assert record["polygons"].endswith(f"{POLYGONS_DIR}/p.tif.parquet")
  table = pq.read_table(output / POLYGONS_DIR / "p.tif.parquet")
  meta = json.loads(table.schema.metadata[b"geo"])
  assert meta["primary_column"] == "geometry" and meta["columns"]["geometry"]["encoding"] == "WKB"
  assert meta["columns"]["geometry"]["crs"]["id"] == {"authority": "EPSG", "code": 32633}
  assert table.num_rows == record["polygon_count"] > 0
  shapes = shapely.from_wkb(table.column("geometry").to_pylist())
  assert [s.area * 1.0 for s in shapes] == pytest.approx(table.column("area").to_pylist())
  by_class = {}
  for name, area in zip(table.column("class_name").to_pylist(), table.column("area").to_pylist()):
    by_class[name] = by_class.get(name, 0.0) + area
  for entry in record["classes"]:
    if entry["pixels"]:
      assert by_class[entry["name"]] == pytest.approx(entry["area"], rel=0.005)


def test_paletted_and_corrupt_geotiffs(tmp_path, fake_model):
  """A paletted GeoTIFF is read as its colours; a truncated one fails at decode with a reason, the rest completes."""
  indices = np.zeros((80, 120), np.uint8)
  indices[:, 60:] = 1
  colours = {0: (200, 30, 30, 255), 1: (30, 30, 200, 255)}  # left red, right blue
  path = tmp_path / "in" / "paletted.tif"
  path.parent.mkdir()
  profile = dict(driver="GTiff", width=120, height=80, count=1, dtype="uint8", photometric="palette")
  with rasterio.open(path, "w", crs=UTM_33N, transform=north_up(*UTM_ORIGIN, 2.0, 2.0), **profile) as dataset:
    dataset.write_colormap(1, colours)
    dataset.write(indices, 1)
  whole = (tmp_path / "in" / "paletted.tif").read_bytes()
  (tmp_path / "in" / "truncated.tif").write_bytes(whole[: len(whole) // 2])
  output = tmp_path / "out"
  _run([str(tmp_path / "in" / "*.tif")], output, fake_model)
  summary, records, failures = read_outputs(str(output))
  check_accounting(summary, records, failures, expected_read=2)
  assert [(f["key"], f["stage"]) for f in failures] == [("truncated.tif", "decode")]
  assert "corrupt or truncated" in failures[0]["message"]
  with rasterio.open(output / MASKS_DIR / "paletted.tif.tif") as mask:
    ids = mask.read(1)
  assert np.all(ids[:, :56] == 1) and np.all(ids[:, 64:] == 3), "red left, blue right"
  assert records["paletted.tif"]["classes"][1]["area"] == pytest.approx(np.count_nonzero(ids == 1) * 4.0)


def test_only_a_geotiff_tag_in_the_first_directory_makes_a_tiff_georeferenced(tmp_path, monkeypatch, caplog):
  """The bundled plain TIFF (whose pixel data holds GeoTIFF tag ids by chance) is not taken for a GeoTIFF.

  Without the geo extra a plain TIFF decodes with no warning; a real GeoTIFF warns once, in one line.
  """
  import tifffile

  from transforms.imaging.image_decoder import decode_located

  plain = (Path(REPO) / "samples" / "images" / "scan_0008.tif").read_bytes()
  path = tmp_path / "scene.tif"
  write_geotiff(path, blocks(32, 32), UTM_33N, north_up(*UTM_ORIGIN, 10.0, 10.0))
  assert not geo.looks_georeferenced(plain) and geo.looks_georeferenced(path.read_bytes())
  for bigtiff in (False, True):
    for byteorder in ("<", ">"):
      tagged, untagged = io.BytesIO(), io.BytesIO()
      scale = [(33550, "d", 3, (2.0, 2.0, 0.0), True)]
      tifffile.imwrite(tagged, np.zeros((4, 4), np.uint8), bigtiff=bigtiff, byteorder=byteorder, extratags=scale)
      tifffile.imwrite(untagged, np.zeros((4, 4), np.uint8), bigtiff=bigtiff, byteorder=byteorder)
      assert geo.looks_georeferenced(tagged.getvalue()) and not geo.looks_georeferenced(untagged.getvalue())
  assert not geo.looks_georeferenced(b"II*\x00\xff\xff\xff\xff") and not geo.looks_georeferenced(b"II+\x00")

  monkeypatch.setattr(geo, "available", lambda: False)
  monkeypatch.setattr(geo, "_WARNED", [])
  with caplog.at_level(logging.WARNING):
    assert decode_located(plain, 10**9)[0].shape == (384, 384, 3)
    assert caplog.records == []
    for _ in range(2):
      pixels, pixel_size, georef = decode_located(path.read_bytes(), 10**9)
      assert pixels.shape == (32, 32, 3) and georef is None
  assert [record.getMessage().split(":")[0] for record in caplog.records] == ["a GeoTIFF was read without its CRS"]
