"""Thumbnails: each image as the pipeline saw it, with its mask blended over it.

Thumbnails are downscaled and inlined as ``data:`` URIs so the page opens
offline and can be mailed around. Sources are read like the pipeline reads
them: files through ``FileSystems``, TFRecord inputs (``<shard>#<index>``)
out of their shard with the TFRecord input's reader and Example class
(``transforms.imaging.tfrecord``), which need no TensorFlow import.
"""

import base64
import dataclasses
import io
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from apache_beam.io.filesystems import FileSystems
from PIL import Image, ImageOps

from pipeline.report import load
from transforms.geo_windows import WINDOWED_SUFFIXES, overview
from transforms.imaging.bands import to_rgb
from transforms.imaging.display import display_stretch, to_display
from transforms.imaging.image_decoder import decode_image
from transforms.imaging.input_spec import DEFAULT_SPEC, InputSpec
from transforms.imaging.mask_files import decode_mask
from transforms.imaging.tfrecord import example_bytes_feature, iter_tfrecords
from transforms.imaging.tiff import is_tiff

OVERLAY_ALPHA = 0.5


@dataclasses.dataclass
class GalleryItem:
  record: load.ImageRecord
  image_uri: str  # data URI of the source thumbnail, or "" when it could not be read
  overlay_uri: str  # mask blended over the source, or the mask alone
  note: str


def palette(classes: Sequence[load.ClassInfo]) -> np.ndarray:
  """A 256-entry lookup table class id -> RGB."""
  table = np.zeros((256, 3), dtype=np.uint8)
  for info in classes:
    if 0 <= info.id < 256:
      table[info.id] = info.color
  return table


def data_uri(image: Image.Image, fmt: str) -> str:
  buffer = io.BytesIO()
  if fmt == "JPEG":
    image.convert("RGB").save(buffer, "JPEG", quality=82, optimize=True)
    mime = "image/jpeg"
  else:
    image.save(buffer, "PNG", optimize=True)
    mime = "image/png"
  return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def load_mask(path: str, table: np.ndarray, size: int) -> Image.Image:
  """The mask downscaled (nearest: no invented classes), then coloured with the class palette."""
  data = load.read_bytes(path, "uncompressed")
  if is_tiff(data):  # a GeoTIFF mask (transforms.imaging.mask_files)
    small = Image.fromarray(decode_mask(data)[0])
  else:
    with Image.open(io.BytesIO(data)) as mask:
      if mask.mode not in ("P", "L"):  # not a class-id image; show it as it is
        coloured = mask.convert("RGB")
        coloured.thumbnail((size, size), Image.Resampling.NEAREST)
        return coloured
      small = mask.copy()
  small.thumbnail((size, size), Image.Resampling.NEAREST)
  return Image.fromarray(table[np.asarray(small)], "RGB")


def read_tfrecord_image(uri: str, image_feature: str) -> bytes:
  """Encoded image bytes of ``<shard>#<index>``, the URI the pipeline gives TFRecord inputs."""
  path, _, index = uri.rpartition("#")
  with FileSystems.open(path) as stream:  # .gz shards are decompressed by extension
    for position, payload in iter_tfrecords(stream):
      if position == int(index):
        if isinstance(payload, Exception):
          raise payload
        return example_bytes_feature(payload, image_feature)
  raise ValueError(f"{path} has no record {index}")


def _source_bytes(uri: str, image_feature: str) -> bytes:
  if re.fullmatch(r".+#\d+", uri) and not load.exists(uri):
    return read_tfrecord_image(uri, image_feature)
  return load.read_bytes(uri, "uncompressed")


def input_spec(run: load.RunSummary, card: dict[str, Any]) -> InputSpec:
  """What the run's model takes (card["input"]), so thumbnails show what it saw; RGB uint8 when unknown."""
  for source in (run.model.get("card"), card):
    if isinstance(source, dict) and isinstance(source.get("input"), dict):
      try:
        return InputSpec.from_card(source)
      except ValueError:
        continue
  return DEFAULT_SPEC


def load_source(uri: str, size: int, image_feature: str, spec: InputSpec = DEFAULT_SPEC) -> Image.Image:
  """The input as the pipeline saw it (EXIF orientation applied, same mode rule), downscaled.

  A GeoTIFF of 8- or 16-bit samples is read decimated through rasterio, so a
  large scene costs about its thumbnail rather than its whole decode.

  Other inputs than RGB uint8 are decoded exactly as the pipeline decodes
  them for the model and drawn with the overlays' display rule
  (``transforms.imaging.display``: grey replicated, first three bands, 16-bit
  stretched by the image's own percentiles).
  """
  small = overview(uri, spec, size) if uri.lower().endswith(WINDOWED_SUFFIXES) else None
  if small is not None:  # a GeoTIFF: read decimated, never whole (transforms.geo_windows)
    image = Image.fromarray(to_display(small, display_stretch(small)), "RGB")
    image.thumbnail((size, size), Image.Resampling.BILINEAR)
    return image
  data = _source_bytes(uri, image_feature)
  if spec != DEFAULT_SPEC:
    pixels, _ = decode_image(data, sys.maxsize, spec)
    image = Image.fromarray(to_display(pixels, display_stretch(pixels)), "RGB")
  else:
    with Image.open(io.BytesIO(data)) as image:
      image.draft("RGB", (size, size))  # JPEG decodes at reduced scale: cheap for big tiles.
      image = ImageOps.exif_transpose(image)
      image = Image.fromarray(to_rgb(image), "RGB")
  image.thumbnail((size, size), Image.Resampling.BILINEAR)
  return image


def gallery_item(
  record: load.ImageRecord, table: np.ndarray, size: int, image_feature: str, spec: InputSpec = DEFAULT_SPEC
) -> GalleryItem:
  """Source and overlay thumbnails of one record; what could not be read becomes a note, not an error."""
  try:
    mask = load_mask(record.mask_path, table, size)
  except Exception as error:
    return GalleryItem(record, "", "", f"mask unreadable: {type(error).__name__}: {error}")
  try:
    source = load_source(record.uri, size, image_feature, spec) if record.uri else None
    if source is None:
      raise ValueError("no source URI in the stats record")
  except Exception as error:
    return GalleryItem(
      record, "", data_uri(mask, "PNG"), f"source unreadable ({type(error).__name__}: {error}); showing the mask only"
    )
  mask = mask.resize(source.size, Image.Resampling.NEAREST)
  overlay = Image.blend(source, mask, OVERLAY_ALPHA)
  return GalleryItem(record, data_uri(source, "JPEG"), data_uri(overlay, "JPEG"), "")
