"""The run report: content checks on a synthetic run directory, gs:// reading,
and a real headless-Chromium rendering of the page."""

import base64
import gzip
import html
import io
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pipeline_helpers import REPO

from pipeline import report
from transforms import record_files, statistics
from transforms.imaging import mask_files
from transforms.imaging.records import (
  FAILURES_DIR,
  REPORT_FILE,
  STATS_DIR,
  SUMMARY_FILE,
  Failure,
  ImageHeader,
  ImageMask,
)

CLASSES = [
  {"id": 0, "name": "water", "color": [40, 90, 200]},
  {"id": 1, "name": "vegetation", "color": [60, 160, 60]},
  {"id": 2, "name": "bare_ground", "color": [170, 140, 100]},
  {"id": 3, "name": "building", "color": [200, 60, 50]},
  {"id": 4, "name": "road", "color": [110, 110, 110]},
]
CARD = {
  "name": "deconvseg-default",
  "version": "1.2.3",
  "format": "deconvseg-model/1",
  "architecture": {"variant": "fcn8s", "encoder": "compact"},
  "classes": CLASSES,
  "metrics": {
    "test": {
      "pixel_accuracy": 0.912,
      "mean_accuracy": 0.874,
      "mean_iou": 0.781,
      "fw_iou": 0.845,
      "per_class_iou": {c["name"]: 0.7 + 0.02 * c["id"] for c in CLASSES},
      "seed": 7,
      "images": 64,
    }
  },
}
EVIL_MESSAGE = 'cannot identify image file <script>alert("x")</script> & <img src=x onerror=alert(1)>'


def _mask_array(index, height, width):
  """A deterministic layout of up to five classes: vertical bands whose widths depend on the index."""
  rng = np.random.default_rng(index)
  edges = np.sort(rng.integers(0, width + 1, size=len(CLASSES) - 1))
  columns = np.searchsorted(edges, np.arange(width), side="right").astype(np.uint8)
  return np.broadcast_to(columns, (height, width)).copy()


def make_run(
  out, images=6, failures=2, image_size=(96, 64), with_sources=True, summary=True, stats_format="jsonl", pixel_size=None
):
  """Write an output directory with the pipeline's own record, mask, stats and summary writers.

  Going through transforms.statistics / transforms.record_files (not hand-written
  JSON) means a change of field names there shows up here as a failing test.
  Returns the per-class pixel totals so tests can compare the chart with them.
  """
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  sources = out.parent / (out.name + "-input")
  model_dir = out.parent / (out.name + "-model")
  model_dir.mkdir(exist_ok=True)
  (model_dir / "card.json").write_text(json.dumps(CARD))
  model = {"name": CARD["name"], "version": CARD["version"], "path": str(model_dir)}
  summarise = statistics.RunSummaryFn(CLASSES)
  accumulator = summarise.create_accumulator()
  palette = mask_files.palette_bytes(CLASSES)
  width, height = image_size
  records, totals = [], {c["name"]: 0 for c in CLASSES}
  for index in range(images):
    key = f"tiles/tile_{index:05d}.png" if index % 3 == 0 else f"tile_{index:05d}.png"
    source = sources / key
    if with_sources:
      source.parent.mkdir(parents=True, exist_ok=True)
      gradient = np.linspace(0, 255, width, dtype=np.uint8)
      rgb = np.stack(
        [
          np.broadcast_to(gradient, (height, width)),
          np.full((height, width), (index * 37) % 256, np.uint8),
          np.broadcast_to(gradient[::-1], (height, width)),
        ],
        axis=-1,
      )
      Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(source)
    ids = _mask_array(index, height, width)
    counts = np.bincount(ids.ravel(), minlength=len(CLASSES))
    for c in CLASSES:
      totals[c["name"]] += int(counts[c["id"]])
    mask = ImageMask(
      header=ImageHeader(
        uri=str(source),
        key=key,
        height=height,
        width=width,
        pixel_size=(pixel_size, pixel_size) if pixel_size else None,
      ),
      class_ids=ids,
      class_pixels=counts,
      class_confidence=counts * 0.9,
    )
    record = statistics.image_record(mask, CLASSES, model, mask_files.mask_relpath(key))
    (out / record["mask"]).parent.mkdir(parents=True, exist_ok=True)
    (out / record["mask"]).write_bytes(mask_files.encode_mask(ids, palette, record, 1))
    records.append(record)
    accumulator = summarise.add_input(accumulator, (statistics.EVENT_READ, record["uri"]))
    accumulator = summarise.add_input(accumulator, (statistics.EVENT_SEGMENTED, record))
  (out / STATS_DIR).mkdir(exist_ok=True)
  stats_path = out / STATS_DIR / f"stats.{stats_format}"
  if stats_format == "jsonl":
    stats_path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
  elif stats_format == "csv":
    header = record_files._csv_header(CLASSES)
    stats_path.write_text(
      ",".join(header) + "\n" + "".join(record_files._csv_line(r, len(header)) + "\n" for r in records)
    )
  else:
    pq.write_table(pa.Table.from_pylist(records, schema=record_files._parquet_schema()), stats_path)
  failure_records = [
    Failure(
      f"gs://bucket/in/broken_{index}.png", f"broken_{index}.png", "decode", "UnidentifiedImageError", EVIL_MESSAGE
    )
    for index in range(failures)
  ]
  for failure in failure_records:
    accumulator = summarise.add_input(accumulator, (statistics.EVENT_READ, failure.uri))
    accumulator = summarise.add_input(accumulator, (statistics.EVENT_FAILED, failure))
  (out / FAILURES_DIR).mkdir(exist_ok=True)
  failures_path = out / FAILURES_DIR / "failures.jsonl"
  failures_path.write_text("".join(json.dumps(f.to_dict(), sort_keys=True) + "\n" for f in failure_records))
  if summary:
    run_info = {
      "model": model,
      "start_time": "2026-11-25T12:00:00Z",
      "options": {"stats_format": stats_format, "tfrecord_image_feature": "image/encoded"},
    }
    document = record_files.write_summary(
      summarise.extract_output(accumulator), str(out), run_info, [str(stats_path)], [str(failures_path)]
    )
    document["end_time"] = "2026-11-25T12:00:40Z"  # a fixed duration for the throughput check
    (out / SUMMARY_FILE).write_text(json.dumps(document))
  return totals


def _bars(document):
  return {
    html.unescape(name): float(value)
    for name, value in re.findall(r'<rect class="bar" data-class="([^"]*)" data-value="([^"]*)"', document)
  }


def _bar_widths(document):
  return {
    html.unescape(name): float(width)
    for name, width in re.findall(r'<rect class="bar" data-class="([^"]*)"[^>]* width="([^"]*)"', document)
  }


def test_report_shows_counts_model_chart_gallery_and_escaped_failures(tmp_path):
  out = tmp_path / "out"
  totals = make_run(out, images=6, failures=2)
  path = report.write_report(str(out))
  assert path == str(out / REPORT_FILE)
  document = (out / REPORT_FILE).read_text()

  cards = dict(re.findall(r'data-field="(\w+)"><div class="v">([^<]*)<', document))
  assert cards["read"] == "8" and cards["segmented"] == "6" and cards["failed"] == "2"
  assert cards["duration"] == "40.0 s" and cards["throughput"] == "0.15/s"
  assert "deconvseg-default" in document and "1.2.3" in document and "0.781" in document
  for c in CLASSES:
    assert f">{c['name']}<" in document
    assert "rgb({},{},{})".format(*c["color"]) in document

  assert _bars(document) == {name: float(value) for name, value in totals.items()}
  widths = _bar_widths(document)
  largest = max(totals.values())
  for name, value in totals.items():
    assert widths[name] == pytest.approx(widths[max(totals, key=totals.get)] * value / largest, abs=0.02)

  assert document.count('<figure class="sample"') == 6
  assert document.count('<img class="overlay"') == 6 and document.count('<img class="source"') == 6
  assert document.count('<g class="box"') == len(CLASSES)

  assert "<script" not in document.lower()
  assert "onerror=alert" not in document.replace("&lt;img src=x onerror=alert(1)&gt;", "")
  assert document.count(html.escape(EVIL_MESSAGE, quote=True)) == 2
  assert 'src="http' not in document and 'href="http' not in document


def test_names_from_user_files_are_escaped_everywhere(tmp_path):
  """Class names come from a user-trained card, keys from user file names: both land in HTML and SVG."""
  out = tmp_path / "out"
  make_run(out, images=3, failures=0)
  hostile = '<script>alert("water")</script>&'
  for path in (tmp_path / "out-model" / "card.json", out / SUMMARY_FILE, out / STATS_DIR / "stats.jsonl"):
    path.write_text(path.read_text().replace('"water"', json.dumps(hostile)))
  stats = out / STATS_DIR / "stats.jsonl"
  stats.write_text(stats.read_text().replace('"tile_00001.png"', json.dumps("tile_<img src=x>.png"), 1))
  document = report.build_report(str(out))
  assert "<script" not in document and "<img src=x" not in document
  assert document.count(html.escape(hostile, quote=True)) >= 6  # legend x2, bar label, title, table, box plot
  assert 'data-class="{}"'.format(html.escape(hostile, quote=True)) in document
  assert html.escape("tile_<img src=x>.png", quote=True) in document


def test_missing_source_shows_the_mask_only(tmp_path):
  out = tmp_path / "out"
  make_run(out, images=3, failures=0)
  shutil.rmtree(tmp_path / "out-input")
  document = report.build_report(str(out))
  assert document.count('<img class="mask"') == 3
  assert '<img class="source"' not in document
  assert document.count("showing the mask only") == 3
  assert "No input failed." in document


def test_gallery_applies_exif_orientation_like_the_pipeline(tmp_path):
  """A phone JPEG stored landscape with orientation 6 is segmented upright; the overlay must be too."""
  out = tmp_path / "out"
  make_run(out, images=1, failures=0, image_size=(40, 60))
  source = Path(json.loads(next((out / STATS_DIR).glob("*.jsonl")).read_text().splitlines()[0])["uri"])
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.new("RGB", (60, 40), (200, 200, 0)).save(source.with_suffix(".jpg"), "JPEG", exif=exif.tobytes())
  source.with_suffix(".jpg").rename(source)
  document = report.build_report(str(out))
  overlay = re.search(r'<img class="overlay"[^>]* src="data:image/jpeg;base64,([^"]*)"', document).group(1)
  assert Image.open(io.BytesIO(base64.b64decode(overlay))).size == (40, 60)


def test_zero_images(tmp_path):
  out = tmp_path / "out"
  make_run(out, images=0, failures=0)
  document = report.build_report(str(out))
  assert "No segmented images to show." in document
  assert "No pixels were segmented." in document
  assert '<rect class="bar"' not in document
  cards = dict(re.findall(r'data-field="(\w+)"><div class="v">([^<]*)<', document))
  assert cards["read"] == "0" and cards["segmented"] == "0"


def test_all_failed_run_without_summary(tmp_path):
  """A crashed run leaves no summary.json: counts come from the failure records, with a warning."""
  out = tmp_path / "out"
  make_run(out, images=0, failures=700, summary=False)
  document = report.build_report(str(out))
  cards = dict(re.findall(r'data-field="(\w+)"><div class="v">([^<]*)<', document))
  assert cards["read"] == "700" and cards["failed"] == "700" and cards["segmented"] == "0"
  assert "summary.json is missing" in document
  assert document.count('<tr><td class="msg">gs://bucket/in/broken_') == report.MAX_FAILURE_ROWS
  assert f"showing the first {report.MAX_FAILURE_ROWS:,} of 700" in document
  assert '<td class="num">700</td>' in document  # the by-stage/error-type summary


def test_many_images_sample_deterministically_and_stay_small(tmp_path):
  out = tmp_path / "out"
  totals = make_run(out, images=1500, failures=3, image_size=(24, 16), with_sources=False)
  first = report.build_report(str(out), max_gallery=12)
  keys = re.findall(r'<figure class="sample" data-key="([^"]*)"', first)
  assert len(keys) == 12
  # The same sample whatever order the records were written in (workers finish in any order).
  stats_file = out / STATS_DIR / "stats.jsonl"
  lines = stats_file.read_text().splitlines()
  random.Random(3).shuffle(lines)
  stats_file.write_text("\n".join(lines) + "\n")
  second = report.build_report(str(out), max_gallery=12)
  assert re.findall(r'<figure class="sample" data-key="([^"]*)"', second) == keys
  assert _bars(second) == {name: float(value) for name, value in totals.items()}
  assert "Per-image class fractions (1,500 images)" in second
  assert len(second.encode()) < 1_000_000


def test_gallery_stays_small_for_large_images(tmp_path):
  out = tmp_path / "out"
  make_run(out, images=12, failures=0, image_size=(1024, 768))
  path = report.write_report(str(out), max_gallery=12)
  assert os.path.getsize(path) < 5_000_000
  assert Path(path).read_text().count('<img class="overlay"') == 12


def _expected_medians(images):
  fractions = {c["name"]: [] for c in CLASSES}
  for index in range(images):
    counts = np.bincount(_mask_array(index, 64, 96).ravel(), minlength=len(CLASSES))
    for c in CLASSES:
      fractions[c["name"]].append(counts[c["id"]] / counts.sum())
  return {name: float(np.median(values)) for name, values in fractions.items()}


@pytest.mark.parametrize("stats_format", ["csv", "parquet"])
def test_csv_and_parquet_stats(tmp_path, stats_format):
  out = tmp_path / "out"
  totals = make_run(out, images=40, failures=0, stats_format=stats_format)
  document = report.build_report(str(out))
  assert "Per-image class fractions (40 images)" in document
  assert document.count('<img class="overlay"') == report.DEFAULT_MAX_GALLERY
  assert _bars(document) == {name: float(value) for name, value in totals.items()}
  medians = dict(re.findall(r'<g class="box" data-class="([^"]*)" data-median="([^"]*)"', document))
  for name, expected in _expected_medians(40).items():
    assert float(medians[name]) == pytest.approx(expected, abs=1.5 / report.FRACTION_BINS)


def test_reads_the_stats_file_the_summary_lists_not_a_stale_one(tmp_path):
  """Re-running into OUT with another --stats_format leaves the old file beside the new one."""
  out = tmp_path / "out"
  make_run(out, images=5, failures=0, stats_format="csv")
  (out / STATS_DIR / "stats.jsonl").write_text(
    "".join(
      json.dumps({"uri": "old", "key": f"old_{i}", "mask": "masks/old.png", "width": 1, "height": 1, "classes": []})
      + "\n"
      for i in range(50)
    )
  )
  document = report.build_report(str(out))
  assert "Per-image class fractions (5 images)" in document and "old_" not in document


def test_areas_with_a_pixel_size(tmp_path):
  out = tmp_path / "out"
  totals = make_run(out, images=2, failures=0, pixel_size=0.5)
  document = report.build_report(str(out))
  assert "area (m^2)" in document
  assert f"{totals['water'] * 0.25:,.0f}" in document or f"{totals['water'] * 0.25:.3g}" in document


def test_without_the_model_card_colours_come_from_the_masks(tmp_path):
  out = tmp_path / "out"
  make_run(out, images=2, failures=0)
  shutil.rmtree(tmp_path / "out-model")
  document = report.build_report(str(out))
  assert "not readable" in document and "test IoU" not in document
  for c in CLASSES:
    assert 'data-class="{}"'.format(c["name"]) in document
    assert "rgb({},{},{})".format(*c["color"]) in document


def test_a_card_of_another_model_version_is_not_shown(tmp_path):
  out = tmp_path / "out"
  make_run(out, images=1, failures=0)
  (tmp_path / "out-model" / "card.json").write_text(json.dumps(dict(CARD, version="9.9.9")))
  document = report.build_report(str(out))
  assert "is now deconvseg-default 9.9.9, not the run&#x27;s deconvseg-default 1.2.3" in document
  assert "0.781" not in document


def test_tfrecord_sources_are_read_from_their_shard(tmp_path):
  """``<shard>#<index>`` URIs: the image comes out of the (TensorFlow-written) sample shard."""
  shard = Path(REPO) / "samples" / "shards" / "samples-00000-of-00001.tfrecord"
  gzipped = tmp_path / "shard.tfrecord.gz"
  gzipped.write_bytes(gzip.compress(shard.read_bytes()))
  for path in (shard, gzipped):
    for index in range(3):
      with Image.open(io.BytesIO(report.gallery.read_tfrecord_image(f"{path}#{index}", "image/encoded"))) as image:
        assert image.size == (256, 256) and np.asarray(image).std() > 10
  with pytest.raises(ValueError, match="no record 99"):
    report.gallery.read_tfrecord_image(f"{shard}#99", "image/encoded")
  with pytest.raises(ValueError, match="no bytes feature 'image/missing'"):
    report.gallery.read_tfrecord_image(f"{shard}#0", "image/missing")


def test_cli_writes_report_where_asked(tmp_path, capsys):
  out = tmp_path / "out"
  make_run(out, images=2, failures=1)
  target = tmp_path / "elsewhere" / "r.html"
  target.parent.mkdir()
  assert report.main([str(out), "--out", str(target), "--max_gallery", "1"]) == 0
  assert capsys.readouterr().out.strip() == str(target)
  assert target.read_text().count('<figure class="sample"') == 1
  assert not (out / REPORT_FILE).exists()


def test_cli_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
  assert report.main([str(tmp_path)]) == 2
  assert "not the --output of a deconvseg run" in capsys.readouterr().err
  assert not (tmp_path / REPORT_FILE).exists()


def test_reads_and_writes_gs_paths(tmp_path, gcs_emulator, gcs_bucket):
  """A run that lives entirely in a bucket: outputs, sources and model card (GCS emulator)."""
  from apache_beam.io.filesystems import FileSystems

  local = tmp_path / "run"
  totals = make_run(local / "out", images=3, failures=1)
  bucket_root = f"gs://{gcs_bucket}/nightly"
  for name in ("out/summary.json", "out/stats/stats.jsonl"):
    (local / name).write_text((local / name).read_text().replace(str(local), bucket_root))
  gcs_emulator.upload_folder(local, bucket_root)
  shutil.rmtree(local)  # from here on everything is read from the bucket

  written = report.write_report(bucket_root + "/out")
  assert written == bucket_root + "/out/report.html"
  with FileSystems.open(written) as handle:
    document = handle.read().decode()
  assert _bars(document) == {name: float(value) for name, value in totals.items()}
  assert document.count('<img class="overlay"') == 3 and "unreadable" not in document
  assert "0.781" in document  # test metrics from the card in the bucket
  assert document.count(html.escape(EVIL_MESSAGE, quote=True)) == 1


@pytest.mark.slow
def test_report_of_a_real_pipeline_run(tmp_path):
  """The pipeline (fake model) writes a run; the report must agree with what it wrote."""
  from fake_model import build_fake_model
  from pipeline_helpers import run_pipeline, write_mode_images

  model = build_fake_model(str(tmp_path / "model"))
  made = write_mode_images(str(tmp_path / "in"))
  (tmp_path / "in" / "broken <b>.png").write_bytes(b"<html>not an image</html>")
  out = tmp_path / "out"
  run_pipeline(tmp_path / "in" / "**", out, model, "--runner=FnApiRunner", "--stats_format=csv")
  summary = json.loads((out / SUMMARY_FILE).read_text())

  document = Path(report.write_report(str(out), max_gallery=len(made))).read_text()
  cards = dict(re.findall(r'data-field="(\w+)"><div class="v">([^<]*)<', document))
  assert (cards["read"], cards["segmented"], cards["failed"]) == tuple(
    str(summary["counts"][name]) for name in ("read", "segmented", "failed")
  )
  assert summary["counts"]["failed"] == 1
  assert _bars(document) == {c["name"]: float(c["pixels"]) for c in summary["classes"]}
  assert "summary.json is missing" not in document and "not readable" not in document
  # Every mode the pipeline decodes (16-bit, CMYK, animated, EXIF-rotated, ...) shows with its overlay,
  # at the mask's orientation.
  figures = re.findall(r'<figure class="sample" data-key="([^"]*)">(.*?)</figure>', document)
  assert len(figures) == len(made) and "unreadable" not in document
  for key, figure in figures:
    width, height = made[html.unescape(key)]
    overlay = re.search(r'class="overlay"[^>]* src="data:image/jpeg;base64,([^"]*)"', figure).group(1)
    shown = Image.open(io.BytesIO(base64.b64decode(overlay))).size
    assert abs(shown[0] / shown[1] - width / height) < 0.05, (key, shown, (width, height))
  assert "broken &lt;b&gt;.png" in document


# --------------------------------------------------------------------------
# Real browser.
# --------------------------------------------------------------------------

PROBE = """<script>
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.querySelectorAll('figure.sample img'));
  var bars = Array.prototype.slice.call(document.querySelectorAll('#class-bars rect.bar'));
  document.body.setAttribute('data-probe', JSON.stringify({
    decoded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    images: images.length,
    bars: bars.map(function (b) { var r = b.getBoundingClientRect();
      return {name: b.getAttribute('data-class'), width: r.width, height: r.height}; }),
    boxes: document.querySelectorAll('#fraction-distribution g.box').length,
    failures: document.querySelectorAll('#failure-table tr').length - 1
  }));
});
</script>"""


@pytest.fixture(scope="session")
def chromium():
  """Debian's chromium, installed by scripts/install_chromium.sh when missing (fails, never skips)."""
  script = Path(REPO) / "scripts" / "install_chromium.sh"
  result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900)
  if result.returncode != 0:
    pytest.fail(
      f"headless Chromium is required for the report browser test and could not be installed "
      f"by {script} (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
    )
  path = shutil.which("chromium")
  assert path, "install_chromium.sh succeeded but `chromium` is not on PATH"
  return path


def _chromium_args(chromium, profile):
  return [
    chromium,
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    f"--user-data-dir={profile}",
  ]


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path, chromium):
  out = tmp_path / "out"
  totals = make_run(out, images=8, failures=2, image_size=(160, 120))
  path = Path(report.write_report(str(out), max_gallery=6))
  document = path.read_text()

  # 1. The DOM after layout: a probe script in a copy whose CSP allows exactly that inline script
  #    and is otherwise the report's own (so images still load only as data: URIs).
  assert "content=\"default-src 'none'; img-src data:;" in document
  probe_page = tmp_path / "probe.html"
  probe_page.write_text(
    document.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';").replace(
      "</body>", PROBE + "</body>"
    )
  )
  dom = subprocess.run(
    _chromium_args(chromium, tmp_path / "profile-dom") + ["--dump-dom", probe_page.as_uri()],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert dom.returncode == 0, dom.stderr[-2000:]
  found = re.search(r'data-probe="([^"]*)"', dom.stdout)
  assert found, "the page's load handler did not run: " + dom.stderr[-2000:]
  probe = json.loads(html.unescape(found.group(1)))
  assert probe["images"] == 12 and probe["decoded"] == 12  # 6 samples x (image, overlay)
  assert probe["boxes"] == len(CLASSES) and probe["failures"] == 2
  rendered = {bar["name"]: bar["width"] for bar in probe["bars"]}
  assert set(rendered) == set(totals)
  largest = max(totals.values())
  for name, value in totals.items():
    assert rendered[name] == pytest.approx(rendered[max(totals, key=totals.get)] * value / largest, abs=0.6)
    assert value == 0 or rendered[name] > 1

  # 2. A real screenshot of the unmodified report is not blank and shows the class colours.
  screenshot = tmp_path / "report.png"
  shot = subprocess.run(
    ["bash", str(Path(REPO) / "scripts" / "screenshot_report.sh"), str(path), str(screenshot)],
    capture_output=True,
    text=True,
    timeout=120,
    env=dict(os.environ, CHROMIUM=chromium),
  )
  assert shot.returncode == 0, shot.stderr[-2000:]
  pixels = np.asarray(Image.open(screenshot).convert("RGB"))
  assert pixels.shape[1] == 1280 and pixels.std() > 20
  colours = set(map(tuple, pixels.reshape(-1, 3)[::3]))
  for c in CLASSES:
    assert tuple(c["color"]) in colours, f"bar colour of {c['name']} not on screen"
