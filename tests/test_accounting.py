"""Byte accounting: summary.json's io block matches the files and records it describes."""

import glob
import os

import apache_beam as beam
import numpy as np
from pipeline_helpers import check_accounting, encode, read_outputs, scene, write_tfrecord

from pipeline.run import run
from transforms.imaging.records import MASKS_DIR, OVERLAYS_DIR, REPORT_FILE, STATS_DIR, ImageRef


def _sizes(pattern):
  return sum(os.path.getsize(p) for p in glob.glob(pattern, recursive=True))


def test_io_block_counts_shuffles_reads_and_writes(fake_model, tmp_path):
  folder = tmp_path / "in"
  folder.mkdir()
  (tmp_path / "shards").mkdir()
  small = [encode(scene(60, 80, seed=i)) for i in range(3)]
  for i, data in enumerate(small):
    (folder / f"small_{i}.png").write_bytes(data)
  (folder / "big.png").write_bytes(encode(scene(300, 260, seed=9)))  # several 128-pixel tiles
  payloads = [encode(scene(50, 50, seed=20 + i)) for i in range(4)]
  # An uncompressed shard's records travel as references (read by offset after the shuffle);
  # a .gz shard cannot be read by offset, so its records carry their image bytes.
  write_tfrecord(str(tmp_path / "shards" / "plain.tfrecord"), [(f"rec{i}", payloads[i]) for i in (0, 1)])
  write_tfrecord(str(tmp_path / "shards" / "packed.tfrecord.gz"), [(f"gz{i}", payloads[i]) for i in (2, 3)], gzip=True)
  output = tmp_path / "out"
  run(
    [
      "--input",
      str(folder / "*.png"),
      "--tfrecord",
      str(tmp_path / "shards" / "*"),
      "--output",
      str(output),
      "--model",
      fake_model,
      "--runner=FnApiRunner",
      "--tile_size=128",
      "--tile_overlap=16",
      "--whole_image_pixels=16384",
      "--overlays",
    ]
  )
  summary, records, failures = read_outputs(str(output))
  check_accounting(summary, records, failures, expected_read=8)
  io = summary["io"]
  assert io["read_bytes"] == _sizes(str(folder / "*.png")) + sum(map(len, payloads))
  assert io["images_read"] == 8
  shuffle = io["shuffle"]
  assert shuffle["tfrecord_payloads"] == {
    "bytes": sum(map(len, payloads[2:])),
    "elements": 2,
    "max_element_bytes": max(map(len, payloads[2:])),
  }
  assert shuffle["refs"]["elements"] == 8
  assert shuffle["refs"]["bytes"] > shuffle["tfrecord_payloads"]["bytes"]
  # Only the multi-tile image crosses the stitch shuffle: its overlay crops are RGB, 3 bytes a pixel.
  assert shuffle["stitch_masks"]["elements"] == shuffle["stitch_overlays"]["elements"] > 1
  assert shuffle["stitch_overlays"]["bytes"] == 300 * 260 * 3
  assert 0 < shuffle["stitch_masks"]["bytes"] < 300 * 260
  assert shuffle["total_bytes"] == sum(shuffle[k]["bytes"] for k in ("refs", "stitch_masks", "stitch_overlays"))
  written = io["written_bytes"]
  assert written["masks"] == _sizes(str(output / MASKS_DIR / "**" / "*.png"))
  assert written["overlays"] == _sizes(str(output / OVERLAYS_DIR / "**" / "*.png"))
  assert written["stats"] == _sizes(str(output / STATS_DIR / "*"))
  assert written["total"] == sum(v for k, v in written.items() if k != "total")
  report = (output / REPORT_FILE).read_text()
  assert 'id="io-table"' in report and "stitch GroupByKey" in report


def test_coder_overhead_of_a_ref_is_small():
  """The payload bytes the metric counts vs what Beam's coder really writes for a (key, ImageRef)."""
  from transforms.accounting import ref_bytes

  coder = beam.coders.registry.get_coder(beam.typehints.Any)
  for data in (None, bytes(np.random.default_rng(0).integers(0, 255, 50_000, dtype=np.uint8))):
    ref = ImageRef("gs://bucket/drops/2024/05/31/tile_000123.png", "tile_000123.png", data)
    encoded = len(coder.encode((ref.key, ref)))
    assert 0 <= encoded - ref_bytes(ref) < 400, (encoded, ref_bytes(ref))


def test_tfrecord_image_read_by_offset_on_cloud_storage(gcs_emulator, gcs_bucket, tmp_path):
  """A record of an uncompressed shard on gs:// becomes a reference, and decode's ranged read gets its bytes."""
  from transforms.decode import read_range
  from transforms.read import ReadTFRecordShardFn

  payloads = [encode(scene(40, 30, seed=i)) for i in range(3)]
  local = tmp_path / "shard.tfrecord"
  write_tfrecord(str(local), [(f"k{i}", data) for i, data in enumerate(payloads)])
  gcs_emulator.client().bucket(gcs_bucket).blob("shards/shard.tfrecord").upload_from_filename(str(local))
  path = f"gs://{gcs_bucket}/shards/shard.tfrecord"
  metadata = beam.io.filesystems.FileSystems.match([path])[0].metadata_list[0]
  refs = list(ReadTFRecordShardFn("image/encoded", "image/key").process(metadata))
  assert [ref.key for ref in refs] == ["k0", "k1", "k2"]
  assert all(ref.data is None and ref.path == path for ref in refs)
  assert [read_range(ref.path, ref.offset, ref.length) for ref in refs] == payloads
