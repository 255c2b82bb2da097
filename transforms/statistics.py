"""Per-image statistics records and the run-level summary combine.

Per-class pixel counts come from the tiles' own bincounts (computed where the
float confidence still exists), so the record and the written mask are two
independent views of the same result that tests can compare.
"""

from typing import List, Optional, Sequence

import apache_beam as beam

from transforms import geo, ood
from transforms.records import STAGE_TRUTH, ImageMask
from transforms.truth import run_truth

# Kinds of the events the summary counts; each is also its count's name in summary.json.
EVENT_READ, EVENT_SEGMENTED, EVENT_FAILED = "read", "segmented", "failed"
# Segmented images whose record was reused from an existing mask (--skip_existing).
EVENT_REUSED = "reused_existing"
# A --truth file whose stem matches no image read (payload: its URI).
EVENT_TRUTH_UNMATCHED = "truth_unmatched"
# The summary lists at most this many distinct CRSs of the images (georeferenced inputs).
MAX_CRS_LISTED = 20


def resolve_areas(mask: ImageMask, flag_pixel_size: Optional[float], pixel_unit: str):
  """(per-class areas or None, pixel size, its source, area unit, area method) of one mask.

  A CRS decides (``transforms.geo``: m², projected or geodesic); without one
  an explicit --pixel_size wins over the image's own geotransform or GeoTIFF
  scale tag (areas in ``pixel_unit``²); without either there are no areas.
  """
  georef = mask.georef
  if georef is not None and georef.crs is not None:
    areas, method = geo.class_areas(georef, mask.class_ids, mask.class_pixels)
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
  classes: Sequence[dict],
  model: dict,
  mask_path: str,
  flag_pixel_size: Optional[float] = None,
  pixel_unit: str = "m",
  ood_rule: Optional[ood.OodRule] = None,
) -> dict:
  """The statistics record of one image (JSON-ready; the schema of stats/).

  With ``ood_rule`` the record gains ``ood`` (``transforms.ood``).
  """
  total = mask.width * mask.height
  areas, pixel_size, source, area_unit, area_method = resolve_areas(mask, flag_pixel_size, pixel_unit)
  per_class = []
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


class RunSummaryFn(beam.CombineFn):
  """Folds (kind, payload) events into the run's counts and per-class totals.

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

  def __init__(self, classes: Sequence[dict], truth_patterns: Sequence[str] = (), ood_rule: Optional[dict] = None):
    self._classes = [dict(id=c["id"], name=c["name"]) for c in classes]
    self._truth_patterns = list(truth_patterns)
    self._ood_rule = ood_rule

  def create_accumulator(self):
    n = len(self._classes)
    return {
      "read": 0,
      "segmented": 0,
      "failed": 0,
      EVENT_REUSED: 0,
      "failed_by_stage": {},
      "pixels": 0,
      "class_pixels": [0] * n,
      "class_area": [0.0] * n,
      "class_confidence": [0.0] * n,
      "images_with_area": 0,
      "area_units": [],
      "area_methods": {},
      "crs": [],
      "truth_images": 0,
      EVENT_TRUTH_UNMATCHED: 0,
      "truth_confusion": [[0] * n for _ in range(n)],
      "ood_checked": 0,
      "ood_flagged": 0,
      "ood_keys": [],
    }

  def add_input(self, acc, event):
    kind, payload = event
    if kind == EVENT_READ:
      acc["read"] += 1
    elif kind == EVENT_REUSED:
      acc[EVENT_REUSED] += 1
    elif kind == EVENT_TRUTH_UNMATCHED:
      acc[EVENT_TRUTH_UNMATCHED] += 1
    elif kind == EVENT_FAILED:
      acc["failed"] += 1
      acc["failed_by_stage"][payload.stage] = acc["failed_by_stage"].get(payload.stage, 0) + 1
    else:
      acc["segmented"] += 1
      acc["pixels"] += payload["pixels"]
      if payload["area_unit"]:
        acc["images_with_area"] += 1
        if payload["area_unit"] not in acc["area_units"]:
          acc["area_units"].append(payload["area_unit"])
        method = payload.get("area_method") or "unknown"
        acc["area_methods"][method] = acc["area_methods"].get(method, 0) + 1
      if payload.get("crs") and payload["crs"] not in acc["crs"] and len(acc["crs"]) < MAX_CRS_LISTED:
        acc["crs"].append(payload["crs"])
      for i, entry in enumerate(payload["classes"]):
        acc["class_pixels"][i] += entry["pixels"]
        if entry["area"] is not None:
          acc["class_area"][i] += entry["area"]
        if entry["mean_confidence"] is not None:
          acc["class_confidence"][i] += entry["mean_confidence"] * entry["pixels"]
      if payload.get("ood"):
        acc["ood_checked"] += 1
        if payload["ood"].get("flagged"):
          acc["ood_flagged"] += 1
          acc["ood_keys"] = sorted(acc["ood_keys"] + [payload["key"]])[: ood.MAX_LISTED]
      if payload.get("truth"):
        acc["truth_images"] += 1
        for row, counts in zip(acc["truth_confusion"], payload["truth"]["confusion"]):
          for j, count in enumerate(counts):
            row[j] += count
    return acc

  def merge_accumulators(self, accumulators):
    accumulators = list(accumulators)
    merged = self.create_accumulator()
    for acc in accumulators:
      for field in (
        "read",
        "segmented",
        "failed",
        EVENT_REUSED,
        "pixels",
        "images_with_area",
        "truth_images",
        EVENT_TRUTH_UNMATCHED,
        "ood_checked",
        "ood_flagged",
      ):
        merged[field] += acc[field]
      for stage, count in acc["failed_by_stage"].items():
        merged["failed_by_stage"][stage] = merged["failed_by_stage"].get(stage, 0) + count
      for field in ("class_pixels", "class_area", "class_confidence"):
        merged[field] = [a + b for a, b in zip(merged[field], acc[field])]
      merged["area_units"] += [u for u in acc["area_units"] if u not in merged["area_units"]]
      for method, count in acc["area_methods"].items():
        merged["area_methods"][method] = merged["area_methods"].get(method, 0) + count
      merged["crs"] += [c for c in acc["crs"] if c not in merged["crs"]][: MAX_CRS_LISTED - len(merged["crs"])]
      merged["ood_keys"] = sorted(merged["ood_keys"] + acc["ood_keys"])[: ood.MAX_LISTED]
      merged["truth_confusion"] = [
        [a + b for a, b in zip(mine, theirs)] for mine, theirs in zip(merged["truth_confusion"], acc["truth_confusion"])
      ]
    return merged

  def extract_output(self, acc):
    total = acc["pixels"]
    classes: List[dict] = []
    for i, entry in enumerate(self._classes):
      pixels = acc["class_pixels"][i]
      classes.append(
        {
          "id": entry["id"],
          "name": entry["name"],
          "pixels": pixels,
          "fraction": pixels / total if total else 0.0,
          "area": acc["class_area"][i] if acc["images_with_area"] else None,
          "mean_confidence": acc["class_confidence"][i] / pixels if pixels else None,
        }
      )
    summary = {
      "counts": {
        "read": acc["read"],
        "segmented": acc["segmented"],
        "failed": acc["failed"],
        EVENT_REUSED: acc[EVENT_REUSED],
      },
      "failed_by_stage": dict(sorted(acc["failed_by_stage"].items())),
      "pixels": total,
      "images_with_area": acc["images_with_area"],
      "area_unit": acc["area_units"][0] if len(acc["area_units"]) == 1 else (acc["area_units"] or None),
      "area_methods": dict(sorted(acc["area_methods"].items())),
      "crs": sorted(acc["crs"]),
      "classes": classes,
    }
    if self._ood_rule is not None:
      summary["ood"] = ood.summarise(acc["ood_checked"], acc["ood_flagged"], acc["ood_keys"], self._ood_rule)
    if self._truth_patterns:
      summary["truth"] = run_truth(
        acc["truth_confusion"],
        [entry["name"] for entry in self._classes],
        acc["truth_images"],
        acc["segmented"] - acc["truth_images"],
        acc[EVENT_TRUTH_UNMATCHED],
        acc["failed_by_stage"].get(STAGE_TRUTH, 0),
        self._truth_patterns,
      )
    return summary
