"""Regenerate the bundled sample inputs: ``python -m samples.make_samples``.

A dozen texture-mosaic scenes (the same generator the default model was
trained on, with seeds it never saw) saved in the formats and pixel modes
people actually hand over: PNG, JPEG (one EXIF-rotated), TIFF, BMP, WebP, GIF,
greyscale, palette, RGBA, 16-bit, non-square and odd sizes, one large enough to
need tiling, and one TFRecord shard of ``tf.train.Example`` records. The exact
ground truth of every scene is written beside them under ``truth/`` (class
index PNGs, oriented like the image a viewer shows) so a run can be scored.
"""

import argparse
import io
import os

import numpy as np
from PIL import Image

from model.data.make_dataset import generate_example

SEED = 20261125
HERE = os.path.dirname(os.path.abspath(__file__))


def _scene(index, height, width):
  """A scene of exactly height x width: generated square, then cropped."""
  rng = np.random.default_rng([SEED, index])
  image, labels = generate_example(rng, size=max(height, width, 16))
  return image[:height, :width], labels[:height, :width]


def _png(array, **kwargs):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG", **kwargs)
  return buffer.getvalue()


# name, height, width, how it is saved
SPECS = [
  ("farm_0001.png", 512, 512, "png"),
  ("suburb_0002.jpg", 480, 640, "jpeg"),
  ("strip_0003.png", 200, 300, "png"),
  ("survey_large_0004.jpg", 1536, 2048, "jpeg"),
  ("grey_0005.png", 256, 256, "grey"),
  ("palette_0006.png", 256, 320, "palette"),
  ("alpha_0007.png", 300, 300, "rgba"),
  ("scan_0008.tif", 384, 384, "tiff"),
  ("drone_0009.webp", 360, 480, "webp"),
  ("legacy_0010.bmp", 250, 250, "bmp"),
  ("loop_0011.gif", 240, 240, "gif"),
  ("rotated_0012.jpg", 320, 400, "exif_rotated"),
  ("depth16_0013.png", 256, 256, "uint16"),
]


def _save(path, image, how):
  if how == "png":
    Image.fromarray(image).save(path, optimize=True)
  elif how == "jpeg":
    Image.fromarray(image).save(path, quality=90)
  elif how == "grey":
    Image.fromarray(image).convert("L").save(path)
  elif how == "palette":
    Image.fromarray(image).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path)
  elif how == "rgba":
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    rgba[:20, :20, 3] = 0  # a transparent corner, as exported by GIS tools
    Image.fromarray(rgba, "RGBA").save(path)
  elif how == "tiff":
    Image.fromarray(image).save(path, compression="tiff_deflate")
  elif how == "webp":
    Image.fromarray(image).save(path, quality=90)
  elif how == "bmp":
    Image.fromarray(image).save(path)
  elif how == "gif":
    frames = [Image.fromarray(image).quantize(colors=256), Image.fromarray(255 - image).quantize(colors=256)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=200, loop=0)
  elif how == "exif_rotated":
    # Stored rotated; EXIF orientation 6 tells viewers to turn it back upright.
    stored = Image.fromarray(image).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, quality=90, exif=exif)
  elif how == "uint16":
    grey = np.asarray(Image.fromarray(image).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(path)
  else:
    raise ValueError(f"unknown sample format {how!r}")


def _tfrecord_shard(path, scenes):
  import tensorflow as tf

  with tf.io.TFRecordWriter(path) as writer:
    for key, image in scenes:
      feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_png(image)])),
        "image/key": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode()])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"])),
      }
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=HERE, help="folder to write images/, shards/ and truth/ into")
  args = parser.parse_args(argv)
  for folder in ("images", "shards", "truth"):
    os.makedirs(os.path.join(args.out, folder), exist_ok=True)
  for index, (name, height, width, how) in enumerate(SPECS, start=1):
    image, labels = _scene(index, height, width)
    _save(os.path.join(args.out, "images", name), image, how)
    stem = os.path.splitext(name)[0]
    Image.fromarray(labels).save(os.path.join(args.out, "truth", stem + ".png"))
  shard_scenes = []
  for offset, key in enumerate(("shard/orchard_0101", "shard/harbour_0102", "shard/village_0103")):
    image, labels = _scene(100 + offset, 256, 256)
    shard_scenes.append((key, image))
    Image.fromarray(labels).save(os.path.join(args.out, "truth", key.split("/")[-1] + ".png"))
  _tfrecord_shard(os.path.join(args.out, "shards", "samples-00000-of-00001.tfrecord"), shard_scenes)


if __name__ == "__main__":
  main()
