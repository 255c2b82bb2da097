"""Segmentation classes: the bundled land-cover list and a user's own.

A class id means the same thing everywhere (data, training, the exported
card, the pipeline's masks, stats and report), so there is one list per
dataset. A user's data folder declares it in ``DIR/classes.json``:

    [{"id": 0, "name": "background", "color": [0, 0, 0]},
     {"id": 1, "name": "nucleus"}]

ids 0..n-1 in order, ``color`` optional (a distinct palette fills the gaps),
or training gets it as ``--classes background,nucleus``. Nothing falls back
silently to the land-cover classes: a two-class dataset trained with a
five-class head would call its background "water" in every output.
"""

import colorsys
import dataclasses
import json
import os
from collections.abc import Iterable
from typing import Any

from model.json_file import write_json_file

IGNORE_LABEL = 255
CLASSES_FILE = "classes.json"
MAX_CLASSES = 255  # ids are uint8 and 255 is the ignore label


class ClassesError(ValueError):
  """A missing or malformed class list; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class SegmentationClass:
  """A class id, its human name and the colour used to draw it in masks."""

  id: int
  name: str
  color: tuple[int, ...]

  def to_json(self) -> dict[str, Any]:
    return {"id": self.id, "name": self.name, "color": list(self.color)}


CLASSES = (
  SegmentationClass(0, "water", (40, 90, 200)),
  SegmentationClass(1, "vegetation", (60, 160, 60)),
  SegmentationClass(2, "bare_ground", (170, 140, 100)),
  SegmentationClass(3, "building", (200, 60, 50)),
  SegmentationClass(4, "road", (110, 110, 110)),
)

CLASS_NAMES = tuple(segmentation_class.name for segmentation_class in CLASSES)
NUM_CLASSES = len(CLASSES)

EXAMPLE_CLASSES_JSON = '[{"id": 0, "name": "background"}, {"id": 1, "name": "nucleus", "color": [230, 60, 60]}]'


def classes_to_json(classes: Iterable[SegmentationClass] = CLASSES) -> list[dict[str, Any]]:
  return [segmentation_class.to_json() for segmentation_class in classes]


def distinct_colors(count: int) -> list[tuple[int, int, int]]:
  """``count`` well-separated RGB colours: black for id 0 (usually background), then golden-ratio hues."""
  colors: list[tuple[int, int, int]] = [(0, 0, 0)]
  hue = 0.0
  for index in range(1, count):
    hue = (hue + 0.618033988749895) % 1.0
    value = 0.95 if index % 2 else 0.75
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.8, value)
    colors.append((round(red * 255), round(green * 255), round(blue * 255)))
  return colors[:count]


def _check_color(color: Any, where: str) -> tuple[int, ...]:
  if not (
    isinstance(color, (list, tuple)) and len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
  ):
    raise ClassesError(f"{where}: color must be three integers 0-255, got {color!r}")
  return tuple(color)


def classes_from_json(entries: Any, source: str = "class list") -> tuple[SegmentationClass, ...]:
  """Rebuild the class list from classes.json, a card or run.json; ids must be 0..n-1, colours optional."""
  if not isinstance(entries, list) or not entries:
    raise ClassesError(f"{source} must be a non-empty JSON list like {EXAMPLE_CLASSES_JSON}")
  if len(entries) < 2:
    raise ClassesError(
      f"{source} lists {len(entries)} class; segmentation needs at least 2 (e.g. background and one more)"
    )
  if len(entries) > MAX_CLASSES:
    raise ClassesError(
      f"{source} lists {len(entries)} classes; masks hold at most {MAX_CLASSES} (255 is the ignore label)"
    )
  palette = distinct_colors(len(entries))
  classes: list[SegmentationClass] = []
  names: set[str] = set()
  for index, entry in enumerate(entries):
    where = f"{source}, entry {index}"
    if not isinstance(entry, dict) or "name" not in entry:
      raise ClassesError(f"{where} must be an object with at least an id and a name, like {EXAMPLE_CLASSES_JSON}")
    if entry.get("id") != index:
      raise ClassesError(
        f"{where} has id {entry.get('id')!r}; ids must be 0..n-1 in order (this one should be {index})"
      )
    name = str(entry["name"]).strip()
    if not name or name in names:
      raise ClassesError(f"{where}: class names must be non-empty and unique, got {entry['name']!r}")
    names.add(name)
    color = _check_color(entry["color"], where) if entry.get("color") is not None else palette[index]
    classes.append(SegmentationClass(index, name, color))
  return tuple(classes)


def classes_from_names(names: str, source: str = "--classes") -> tuple[SegmentationClass, ...]:
  """``background,nucleus`` -> class list with generated colours."""
  parts = [part.strip() for part in str(names).split(",")]
  if any(not part for part in parts):
    raise ClassesError(f"{source} {names!r} has an empty name; give comma-separated names, e.g. background,nucleus")
  return classes_from_json([{"id": index, "name": name} for index, name in enumerate(parts)], source)


def read_classes_file(path: str) -> tuple[SegmentationClass, ...]:
  """The class list in a classes.json file (ClassesError naming the file if it is malformed)."""
  try:
    with open(path) as handle:
      entries = json.load(handle)
  except json.JSONDecodeError as exc:
    raise ClassesError(f"{path} is not valid JSON ({exc}); write a list like {EXAMPLE_CLASSES_JSON}") from None
  except OSError as exc:  # missing, a folder, unreadable: say which file, not a traceback
    raise ClassesError(
      f"cannot read the class list {path}: {exc.strerror or exc}; give a classes.json like {EXAMPLE_CLASSES_JSON}"
    ) from None
  return classes_from_json(entries, source=path)


def write_classes_file(data_dir: str, classes: Iterable[SegmentationClass]) -> str:
  path = os.path.join(data_dir, CLASSES_FILE)
  write_json_file(path, classes_to_json(classes))
  return path


def dataset_classes(data_dir: str, names: str | None = None) -> tuple[SegmentationClass, ...]:
  """The classes of a data folder: ``names`` (the --classes flag) if given, else DIR/classes.json.

  With neither, a ClassesError shows the file to write. When both are
  given they must agree, so a flag cannot silently relabel a dataset.
  """
  path = os.path.join(data_dir, CLASSES_FILE)
  from_file = read_classes_file(path) if os.path.exists(path) else None
  if names is not None:
    from_flag = classes_from_names(names)
    if from_file is not None and [c.name for c in from_file] != [c.name for c in from_flag]:
      raise ClassesError(
        f"--classes {names} disagrees with {path} ({', '.join(c.name for c in from_file)}); drop the flag or fix the file"
      )
    return from_file if from_file is not None else from_flag
  if from_file is None:
    raise ClassesError(
      f"{data_dir} has no {CLASSES_FILE}: write {path} as {EXAMPLE_CLASSES_JSON} (ids 0..n-1, color optional), or pass --classes background,nucleus"
    )
  return from_file
