"""Byte accounting: what crosses each GroupByKey, what is read and what is written.

Each figure is a Beam distribution metric in namespace ``deconvseg`` (sum =
bytes, count = elements, max = the largest element), updated where the bytes
are in hand; on Dataflow they show up as the job's custom metrics, and after a
local or blocking run ``pipeline.run`` copies them into ``summary.json`` under
``io`` (``io_block``) and the report shows them.

Shuffle sizes are payload bytes: the fields' contents (strings as UTF-8,
``bytes`` as they are, arrays by ``nbytes``). Beam's pickling coder adds a
roughly constant ~70 bytes per element on top (a (key, ImageRef) of a file
encodes to 137 bytes for 74 counted; ``tests/test_accounting.py`` bounds it),
which matters only for the ref shuffle of file inputs, where the payload
itself is a path.
"""

from typing import Any, Optional

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from transforms.imaging.records import ImageRef, TileResult

NAMESPACE = "deconvseg"
# GroupByOutputKey (transforms.read): every ImageRef, and the TFRecord image bytes they carry.
SHUFFLE_REFS = "shuffle_refs_bytes"
SHUFFLE_TFRECORD = "shuffle_tfrecord_payload_bytes"
# GroupTilesByImage (transforms.stitch): packed class-id crops and overlay crops of multi-tile images.
SHUFFLE_STITCH_MASKS = "shuffle_stitch_mask_bytes"
SHUFFLE_STITCH_OVERLAYS = "shuffle_stitch_overlay_bytes"
# Encoded image bytes the decode step got (from the file, or from the TFRecord record).
READ = "read_bytes"
WRITTEN_MASKS = "written_mask_bytes"
WRITTEN_OVERLAYS = "written_overlay_bytes"

SHUFFLES = (
  ("refs", SHUFFLE_REFS),
  ("tfrecord_payloads", SHUFFLE_TFRECORD),
  ("stitch_masks", SHUFFLE_STITCH_MASKS),
  ("stitch_overlays", SHUFFLE_STITCH_OVERLAYS),
)
ALL = tuple(name for _, name in SHUFFLES) + (READ, WRITTEN_MASKS, WRITTEN_OVERLAYS)


def distribution(name: str) -> Any:
  return Metrics.distribution(NAMESPACE, name)


def _text_bytes(text: object) -> int:
  return len(text.encode("utf-8")) if isinstance(text, str) else 0


def ref_bytes(ref: ImageRef) -> int:
  """Payload bytes of an ImageRef in the de-duplicating shuffle (its key travels twice: as key and field)."""
  return (
    2 * _text_bytes(ref.key)
    + _text_bytes(ref.uri)
    + (len(ref.data) if ref.data is not None else 0)
    + (16 if getattr(ref, "offset", None) is not None else 0)
  )


def packed_bytes(packed: object) -> int:
  """Bytes of a ``transforms.stitch.pack`` triple (or of a plain array)."""
  if isinstance(packed, tuple) and len(packed) == 3:
    return len(packed[2])
  return int(getattr(packed, "nbytes", 0) or 0)


def _bytes_of(value: object) -> int:
  return int(getattr(value, "nbytes", 0) or 0) if value is not None else 0


def tile_result_bytes(result: TileResult) -> tuple[int, int]:
  """(class-id bytes, overlay bytes) of a TileResult entering the stitch shuffle."""
  return packed_bytes(result.class_ids), _bytes_of(result.overlay)


def _distribution_results(result: Any, name: str) -> Optional[dict[str, int]]:
  try:
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE).with_name(name))
  except Exception:  # a runner without metrics
    return None
  found = query.get("distributions", [])
  if not found:
    return None
  total = {"bytes": 0, "elements": 0, "max_element_bytes": 0}
  for metric in found:
    value = metric.committed if metric.committed is not None else metric.attempted
    if value is None or not value.count:
      continue
    total["bytes"] += int(value.sum)
    total["elements"] += int(value.count)
    total["max_element_bytes"] = max(total["max_element_bytes"], int(value.max))
  return total


def io_block(result: Any, extra_written: Optional[dict[str, int]] = None) -> Optional[dict[str, Any]]:
  """The ``io`` block of summary.json from a finished run's metrics; None if the runner reports none.

  ``extra_written`` adds files the launcher measured itself (stats, failures).
  A stage that saw no element has no metric; it reads as zero here.
  """
  values = {name: _distribution_results(result, name) for name in ALL}
  if all(value is None for value in values.values()):
    return None
  empty = {"bytes": 0, "elements": 0, "max_element_bytes": 0}
  shuffle = {label: values[name] or dict(empty) for label, name in SHUFFLES}
  # tfrecord_payloads is a part of refs, not a separate shuffle.
  shuffle_total = sum(shuffle[label]["bytes"] for label in ("refs", "stitch_masks", "stitch_overlays"))
  written = {
    "masks": (values[WRITTEN_MASKS] or empty)["bytes"],
    "overlays": (values[WRITTEN_OVERLAYS] or empty)["bytes"],
  }
  written.update(extra_written or {})
  return {
    "source": "Beam metrics (distributions in namespace deconvseg); shuffle sizes are payload bytes",
    "shuffle": dict(shuffle, total_bytes=shuffle_total),
    "read_bytes": (values[READ] or empty)["bytes"],
    "images_read": (values[READ] or empty)["elements"],
    "written_bytes": dict(written, total=sum(written.values())),
  }
