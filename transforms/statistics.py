"""Per-image statistics records and the run-level summary combine.

Per-class pixel counts come from the tiles' own bincounts (computed where the
float confidence still exists), so the record and the written mask are two
independent views of the same result that tests can compare.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from operator import add
from typing import Any

import apache_beam as beam

from transforms.imaging import geo, ood
from transforms.imaging.records import STAGE_TRUTH, ImageMask
from transforms.truth import run_truth

# Kinds of the events the summary counts; each is also its count's name in summary.json.
EVENT_READ, EVENT_SEGMENTED, EVENT_FAILED = "read", "segmented", "failed"
# Segmented images whose record was reused from an existing mask (--skip_existing).
EVENT_REUSED = "reused_existing"
# A --truth file whose stem matches no image read (payload: its URI).
EVENT_TRUTH_UNMATCHED = "truth_unmatched"
# The summary lists at most this many distinct CRSs of the images (georeferenced inputs).
MAX_CRS_LISTED = 20


# (per-class areas, pixel size, its source, area unit, area method); all None without areas.
Areas = tuple[list[float] | None, tuple[float, float] | None, str | None, str | None, str | None]


def resolve_areas(mask: ImageMask, flag_pixel_size: float | None, pixel_unit: str) -> Areas:
  """(per-class areas or None, pixel size, its source, area unit, area method) of one mask.

  A CRS decides (``transforms.imaging.geo``: m², projected or geodesic); without one
  an explicit --pixel_size wins over the image's own geotransform or GeoTIFF
  scale tag (areas in ``pixel_unit``²); without either there are no areas.
  """
  georef = mask.georef
  measured = geo.class_areas(georef, mask.class_ids, mask.class_pixels)  # None without a CRS
  if georef is not None and measured is not None:
    areas, method = measured
    return [float(area) for area in areas], georef.pixel_size, "geotiff", "m^2", method
  if flag_pixel_size:
    size, source, method = (float(flag_pixel_size), float(flag_pixel_size)), "flag", geo.AREA_PIXEL_SIZE
  elif mask.pixel_size:
    size, source, method = (float(mask.pixel_size[0]), float(mask.pixel_size[1])), "geotiff", geo.AREA_TRANSFORM
  else:
    return None, None, None, None, None
  pixel_area = size[0] * size[1]
  return [int(count) * pixel_area for count in mask.class_pixels], size, source, f"{pixel_unit}^2", method


def image_record(
  mask: ImageMask,
  classes: Sequence[dict[str, Any]],
  model: dict[str, Any],
  mask_path: str,
  flag_pixel_size: float | None = None,
  pixel_unit: str = "m",
  ood_rule: ood.OodRule | None = None,
) -> dict[str, Any]:
  """The statistics record of one image (JSON-ready; the schema of stats/).

  With ``ood_rule`` the record gains ``ood`` (``transforms.imaging.ood``).
  """
  total = mask.width * mask.height
  areas, pixel_size, source, area_unit, area_method = resolve_areas(mask, flag_pixel_size, pixel_unit)
  per_class: list[dict[str, Any]] = []
  for entry in classes:
    count = int(mask.class_pixels[entry["id"]])
    conf_sum = float(mask.class_confidence[entry["id"]])
    per_class.append(
      {
        "id": int(entry["id"]),
        "name": entry["name"],
        "pixels": count,
        "fraction": count / total,
        "area": areas[entry["id"]] if areas is not None else None,
        "mean_confidence": conf_sum / count if count else None,
      }
    )
  mean_confidence = float(sum(mask.class_confidence)) / total
  record = {
    "uri": mask.uri,
    "key": mask.key,
    "mask": mask_path,
    "width": int(mask.width),
    "height": int(mask.height),
    "pixels": int(total),
    "pixel_size": list(pixel_size) if pixel_size else None,
    "pixel_size_source": source,
    "area_unit": area_unit,
    "area_method": area_method,
    "crs": mask.georef.crs_label if mask.georef is not None else None,
    "mean_confidence": mean_confidence,
    "model": {"name": model.get("name"), "version": model.get("version")},
    "classes": per_class,
  }
  if ood_rule is not None:
    record["ood"] = ood_rule.check(mask.ood, mean_confidence)
  return record


def _sum_by_key(mine: dict[str, int], theirs: dict[str, int]) -> dict[str, int]:
  merged = dict(mine)
  for key, count in theirs.items():
    merged[key] = merged.get(key, 0) + count
  return merged


def _sum_each(mine: list[Any], theirs: list[Any]) -> list[Any]:
  return [a + b for a, b in zip(mine, theirs)]


def _sum_rows(mine: list[list[int]], theirs: list[list[int]]) -> list[list[int]]:
  return [_sum_each(a, b) for a, b in zip(mine, theirs)]


def _first_seen(mine: list[str], theirs: list[str]) -> list[str]:
  return mine + [value for value in theirs if value not in mine]


def _first_crs(mine: list[str], theirs: list[str]) -> list[str]:
  return mine + [crs for crs in theirs if crs not in mine][: MAX_CRS_LISTED - len(mine)]


def _smallest_keys(mine: list[str], theirs: list[str]) -> list[str]:
  return sorted(mine + theirs)[: ood.MAX_LISTED]


def _total(merge: Callable[[Any, Any], Any], start: Callable[[], Any] = int) -> Any:
  """A ``SummaryTotals`` field: how it starts (zero, an empty list or dict) and how two accumulators' merge."""
  return field(default_factory=start, metadata={"merge": merge})


@dataclass
class SummaryTotals:
  """``RunSummaryFn``'s accumulator: the run's events added up (each field says how two of them merge).

  The per-class lists (and the n x n truth confusion) start empty here; ``empty`` sizes them.
  """

  read: int = _total(add)
  segmented: int = _total(add)
  failed: int = _total(add)
  reused_existing: int = _total(add)
  failed_by_stage: dict[str, int] = _total(_sum_by_key, dict)
  pixels: int = _total(add)
  class_pixels: list[int] = _total(_sum_each, list)
  class_area: list[float] = _total(_sum_each, list)
  class_confidence: list[float] = _total(_sum_each, list)
  images_with_area: int = _total(add)
  area_units: list[str] = _total(_first_seen, list)
  area_methods: dict[str, int] = _total(_sum_by_key, dict)
  crs: list[str] = _total(_first_crs, list)
  truth_images: int = _total(add)
  truth_unmatched: int = _total(add)
  truth_confusion: list[list[int]] = _total(_sum_rows, list)
  ood_checked: int = _total(add)
  ood_flagged: int = _total(add)
  ood_keys: list[str] = _total(_smallest_keys, list)

  @classmethod
  def empty(cls, classes: int) -> "SummaryTotals":
    return cls(
      class_pixels=[0] * classes,
      class_area=[0.0] * classes,
      class_confidence=[0.0] * classes,
      truth_confusion=[[0] * classes for _ in range(classes)],
    )

  def merge(self, other: "SummaryTotals") -> None:
    for item in fields(self):
      setattr(self, item.name, item.metadata["merge"](getattr(self, item.name), getattr(other, item.name)))

  def add_failure(self, failure: Any) -> None:
    self.failed += 1
    self.failed_by_stage[failure.stage] = self.failed_by_stage.get(failure.stage, 0) + 1

  def add_record(self, record: dict[str, Any]) -> None:
    """One segmented image's statistics record (``image_record``, with ``truth`` under --truth)."""
    self.segmented += 1
    self.pixels += record["pixels"]
    if record["area_unit"]:
      self.images_with_area += 1
      if record["area_unit"] not in self.area_units:
        self.area_units.append(record["area_unit"])
      method = record.get("area_method") or "unknown"
      self.area_methods[method] = self.area_methods.get(method, 0) + 1
    if record.get("crs") and record["crs"] not in self.crs and len(self.crs) < MAX_CRS_LISTED:
      self.crs.append(record["crs"])
    for i, entry in enumerate(record["classes"]):
      self.class_pixels[i] += entry["pixels"]
      if entry["area"] is not None:
        self.class_area[i] += entry["area"]
      if entry["mean_confidence"] is not None:
        self.class_confidence[i] += entry["mean_confidence"] * entry["pixels"]
    if record.get("ood"):
      self.ood_checked += 1
      if record["ood"].get("flagged"):
        self.ood_flagged += 1
        self.ood_keys = sorted(self.ood_keys + [record["key"]])[: ood.MAX_LISTED]
    if record.get("truth"):
      self.truth_images += 1
      for row, counts in zip(self.truth_confusion, record["truth"]["confusion"]):
        for j, count in enumerate(counts):
          row[j] += count


class RunSummaryFn(beam.CombineFn):
  """Folds (kind, payload) events into the run's counts and per-class totals (``SummaryTotals``).

  ``read`` events are the inputs found, ``segmented`` events are statistics
  records, ``failed`` events are failure records; the output is checked by
  tests as read == segmented + failed. ``reused_existing`` events count the
  segmented images that ``--skip_existing`` did not recompute.

  With ``truth_patterns`` (``--truth``) the records' confusion matrices are
  summed into the run's, and ``truth_unmatched`` events count the truth
  files that matched no image; the output gains ``truth``.

  With ``ood_rule`` (``OodRule.describe()``) records that carry ``ood`` are
  counted as checked / flagged, the smallest flagged keys kept (so the list
  does not depend on the order the runner delivers them); the output gains
  ``ood``.
  """

  def __init__(
    self,
    classes: Sequence[dict[str, Any]],
    truth_patterns: Sequence[str] = (),
    ood_rule: dict[str, Any] | None = None,
  ):
    self._classes = [dict(id=c["id"], name=c["name"]) for c in classes]
    self._truth_patterns = list(truth_patterns)
    self._ood_rule = ood_rule

  def create_accumulator(self) -> SummaryTotals:
    return SummaryTotals.empty(len(self._classes))

  def add_input(self, acc: SummaryTotals, event: Any) -> SummaryTotals:
    kind, payload = event
    if kind == EVENT_READ:
      acc.read += 1
    elif kind == EVENT_REUSED:
      acc.reused_existing += 1
    elif kind == EVENT_TRUTH_UNMATCHED:
      acc.truth_unmatched += 1
    elif kind == EVENT_FAILED:
      acc.add_failure(payload)
    else:
      acc.add_record(payload)
    return acc

  def merge_accumulators(self, accumulators: Iterable[SummaryTotals]) -> SummaryTotals:
    merged = self.create_accumulator()
    for acc in accumulators:
      merged.merge(acc)
    return merged

  def extract_output(self, acc: SummaryTotals) -> Any:
    summary = {
      "counts": {
        EVENT_READ: acc.read,
        EVENT_SEGMENTED: acc.segmented,
        EVENT_FAILED: acc.failed,
        EVENT_REUSED: acc.reused_existing,
      },
      "failed_by_stage": dict(sorted(acc.failed_by_stage.items())),
      "pixels": acc.pixels,
      "images_with_area": acc.images_with_area,
      "area_unit": acc.area_units[0] if len(acc.area_units) == 1 else (acc.area_units or None),
      "area_methods": dict(sorted(acc.area_methods.items())),
      "crs": sorted(acc.crs),
      "classes": self._class_totals(acc),
    }
    if self._ood_rule is not None:
      summary["ood"] = ood.summarise(acc.ood_checked, acc.ood_flagged, acc.ood_keys, self._ood_rule)
    if self._truth_patterns:
      summary["truth"] = run_truth(
        acc.truth_confusion,
        [entry["name"] for entry in self._classes],
        acc.truth_images,
        acc.segmented - acc.truth_images,
        acc.truth_unmatched,
        acc.failed_by_stage.get(STAGE_TRUTH, 0),
        self._truth_patterns,
      )
    return summary

  def _class_totals(self, acc: SummaryTotals) -> list[dict[str, Any]]:
    """summary.json's ``classes``: each class's pixels, share, area and mean confidence over the run."""
    total = acc.pixels
    classes = []
    for i, entry in enumerate(self._classes):
      pixels = acc.class_pixels[i]
      classes.append(
        {
          "id": entry["id"],
          "name": entry["name"],
          "pixels": pixels,
          "fraction": pixels / total if total else 0.0,
          "area": acc.class_area[i] if acc.images_with_area else None,
          "mean_confidence": acc.class_confidence[i] / pixels if pixels else None,
        }
      )
    return classes
