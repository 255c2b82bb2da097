"""Background decode and write (transforms.lookahead): same outputs, same order, one result per input."""

import json

import numpy as np
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue
from PIL import Image
from pipeline_helpers import encode, scene

from transforms.decode import DecodeImagesFn, DecodeSettings
from transforms.imaging.mask_files import STATS_CHUNK
from transforms.imaging.records import (
  FAILED,
  MASKS_DIR,
  STAGE_DECODE,
  STAGE_READ,
  STAGE_WRITE,
  ImageHeader,
  ImageMask,
  ImageRef,
)
from transforms.sinks import SinkSettings, WriteMasksFn

CLASSES = [{"id": 0, "name": "a", "color": [0, 0, 0]}, {"id": 1, "name": "b", "color": [255, 0, 0]}]
MODEL = {"name": "m", "version": "1"}


def _run(fn, items):
  """Drives a DoFn as the runner does; returns (outputs in emission order, how many came from finish_bundle)."""
  fn.setup()
  fn.start_bundle()
  outputs = []
  for item in items:
    outputs.extend(fn.process(item, window=GlobalWindow(), timestamp=MIN_TIMESTAMP))
  finished = list(fn.finish_bundle() or [])
  fn.teardown()
  for output in finished:
    value = output.value if isinstance(output, TaggedOutput) else output
    assert isinstance(value, WindowedValue) and value.windows == [GlobalWindow()]
  unwrap = lambda o: TaggedOutput(o.tag, o.value.value) if isinstance(o, TaggedOutput) else o.value
  return outputs + [unwrap(o) for o in finished], len(finished)


def _refs(tmp_path):
  refs = []
  for i in range(5):
    path = tmp_path / f"img{i}.png"
    path.write_bytes(encode(scene(24 + i, 32, seed=i)))
    refs.append(ImageRef(uri=str(path), key=f"img{i}"))
  refs.insert(2, ImageRef(uri=str(tmp_path / "missing.png"), key="missing"))
  refs.insert(4, ImageRef(uri="inline", key="empty", data=b""))
  return refs


def test_prefetched_decode_matches_inline_decode_in_order(tmp_path):
  refs = _refs(tmp_path)
  inline, _ = _run(DecodeImagesFn(DecodeSettings(10**6)), refs)
  ahead, from_finish = _run(DecodeImagesFn(DecodeSettings(10**6, prefetch=3)), refs)
  assert from_finish == 3  # the look-ahead is bounded and flushed at the end of the bundle
  assert len(ahead) == len(inline) == len(refs)
  for a, b in zip(ahead, inline):
    if isinstance(b, TaggedOutput):
      assert a.tag == b.tag == FAILED and a.value == b.value
    else:
      assert a.key == b.key and np.array_equal(a.pixels, b.pixels)
  stages = {o.value.key: o.value.stage for o in ahead if isinstance(o, TaggedOutput)}
  assert stages == {"missing": STAGE_READ, "empty": STAGE_DECODE}


def test_prefetch_shrinks_to_one_image_for_large_images(tmp_path):
  refs = _refs(tmp_path)
  _, from_finish = _run(DecodeImagesFn(DecodeSettings(10**6, prefetch=4, prefetch_pixels=100)), refs)
  assert from_finish == 1


def _mask(key, seed, height=20, width=30):
  ids = np.random.default_rng(seed).integers(0, 2, (height, width)).astype(np.uint8)
  return ImageMask(
    header=ImageHeader(uri=f"mem://{key}", key=key, height=height, width=width),
    class_ids=ids,
    class_pixels=np.bincount(ids.ravel(), minlength=2).astype(np.int64),
    class_confidence=np.ones(2),
  )


def test_background_writes_keep_one_record_or_failure_per_mask(tmp_path):
  masks = [_mask(f"m{i}", i) for i in range(5)]
  masks.insert(3, _mask("bad", 9)._replace(class_ids=np.zeros((2, 2, 2, 2), np.uint8)))  # cannot encode
  inline, _ = _run(WriteMasksFn(SinkSettings(str(tmp_path / "a"), CLASSES, MODEL)), masks)
  ahead, from_finish = _run(WriteMasksFn(SinkSettings(str(tmp_path / "b"), CLASSES, MODEL, write_ahead=2)), masks)
  assert from_finish == 2
  assert [o.tag if isinstance(o, TaggedOutput) else o["key"] for o in ahead] == [
    o.tag if isinstance(o, TaggedOutput) else o["key"] for o in inline
  ]
  failed = [o.value for o in ahead if isinstance(o, TaggedOutput)]
  assert [(f.key, f.stage) for f in failed] == [("bad", STAGE_WRITE)]
  for mask in masks:
    if mask.key == "bad":
      assert not (tmp_path / "b" / MASKS_DIR / "bad.png").exists()
      continue
    with Image.open(tmp_path / "b" / MASKS_DIR / f"{mask.key}.png") as image:
      assert np.array_equal(np.asarray(image), mask.class_ids)
      assert json.loads(image.info[STATS_CHUNK])["key"] == mask.key
  assert not list((tmp_path / "b" / ".tmp").glob("*"))  # every temp file was renamed into place
