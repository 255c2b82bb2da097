"""The image/mask pairs of one split of a dataset, for ``python -m model.check_data``.

A split is a folder pair (``DIR/<split>/images`` and ``masks``, paired by
file stem) or TFRecord shards of ``tf.train.Example``, as ``model.data``
reads them. Every file that cannot be paired is a problem appended to the
caller's list, so that one run of the check reports them all; the pairs are
examined in ``model.check_data``.
"""

import dataclasses
import glob
import os
from collections.abc import Iterator, MutableMapping, Sequence

from model.data.image_io import IMAGE_EXTENSIONS, MASK_EXTENSION, Source


@dataclasses.dataclass
class Item:
  """One image/mask pair to examine; sources are paths or encoded bytes, labels name them in messages."""

  image_source: Source
  mask_source: Source
  image_label: str
  mask_label: str


def folder_split(data_dir: str, split: str, problems: list[str]) -> tuple[list[Item], int, int, list[str]]:
  """(items, image count, mask count, ignored file names) of DIR/<split>/images + masks, pairing by stem."""
  image_dir, mask_dir = os.path.join(data_dir, split, "images"), os.path.join(data_dir, split, "masks")
  listing = lambda folder: (
    sorted(f for f in os.listdir(folder) if not f.startswith(".")) if os.path.isdir(folder) else []
  )
  images: dict[str, str] = {}
  ignored: dict[str, str] = {}
  for filename in listing(image_dir):
    stem, extension = os.path.splitext(filename)
    if extension.lower() not in IMAGE_EXTENSIONS:
      ignored[stem] = filename
    elif stem in images:
      problems.append(
        f"{split}/images/{images[stem]} and {split}/images/{filename} share the stem {stem!r}, "
        "so one mask would belong to both; rename or remove one"
      )
    else:
      images[stem] = filename
  masks: dict[str, str] = {}
  for filename in listing(mask_dir):
    stem, extension = os.path.splitext(filename)
    if extension != MASK_EXTENSION:
      problems.append(
        f"{split}/masks/{filename} is not a {MASK_EXTENSION} file; masks are single-channel PNGs named <image stem>.png"
      )
    else:
      masks[stem] = filename
  items: list[Item] = []
  for stem, filename in images.items():
    if stem not in masks:
      problems.append(f"{split}/images/{filename} has no mask {split}/masks/{stem}{MASK_EXTENSION}")
      continue
    items.append(
      Item(
        os.path.join(image_dir, filename),
        os.path.join(mask_dir, masks[stem]),
        f"{split}/images/{filename}",
        f"{split}/masks/{masks[stem]}",
      )
    )
  for stem, filename in masks.items():
    if stem in images:
      continue
    if stem in ignored:
      problems.append(
        f"{split}/masks/{filename} has no image: {split}/images/{ignored[stem]} is not a supported format "
        f"({', '.join(IMAGE_EXTENSIONS)}); convert it to PNG or TIFF"
      )
    else:
      problems.append(
        f"{split}/masks/{filename} has no image {split}/images/{stem}.<{'|'.join(e[1:] for e in IMAGE_EXTENSIONS)}>"
      )
  unpaired_ignored = sorted(name for stem, name in ignored.items() if stem not in masks)
  return items, len(images), len(masks), unpaired_ignored


def split_shards(data_dir: str, split: str) -> list[str]:
  shards = sorted(glob.glob(os.path.join(data_dir, split, "shards", "*.tfrecord")))
  return shards or sorted(glob.glob(os.path.join(data_dir, f"{split}*.tfrecord")))


def tfrecord_items(
  data_dir: str, shards: Sequence[str], problems: list[str], counter: MutableMapping[str, int]
) -> Iterator[Item]:
  """Items of every Example in the shards (TensorFlow imported only here: folder datasets never pay for it)."""
  import tensorflow as tf

  for shard in shards:
    shard_label = os.path.relpath(shard, data_dir)
    index = -1
    try:
      for index, record in enumerate(tf.data.TFRecordDataset(shard).as_numpy_iterator()):
        label = f"{shard_label} record {index}"
        try:
          feature = tf.train.Example.FromString(record).features.feature
        except Exception as exc:  # protobuf's DecodeError
          problems.append(f"{label} is not a tf.train.Example: {exc}")
          continue
        values = {key: feature[key].bytes_list.value for key in feature}
        if values.get("image/filename"):
          label += f" ({values['image/filename'][0].decode(errors='replace')})"
        missing = [key for key in ("image/encoded", "image/segmentation/class/encoded") if not values.get(key)]
        counter["images"] += 1
        if missing:
          problems.append(f"{label} has no bytes feature {' or '.join(missing)}")
          continue
        counter["masks"] += 1
        yield Item(
          values["image/encoded"][0], values["image/segmentation/class/encoded"][0], f"{label} image", f"{label} mask"
        )
    except tf.errors.OpError as exc:
      problems.append(f"{shard_label} cannot be read after record {index}: {exc.message}")
