"""The ablation's measures and statistics: the checkerboard share of a probability map, Student-t intervals over
seeds, and the per-row summary (means, paired differences against learned bilinear) that the table and figures show.

Pure numpy and scipy, so the measures are tested on synthetic maps without training anything.
"""

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from model.ablation.grid import REFERENCE, REGIMES, UPSAMPLINGS


def checkerboard_energy(probabilities: npt.ArrayLike, period: int) -> tuple[float, float]:
  """(periodic energy, total energy) of a map [H, W] or [H, W, C] at one period.

  The periodic part is the map's projection onto images that repeat every
  ``period`` pixels in both directions: the polyphase mean (the average of
  all period x period blocks), tiled. Its energy equals the spectral energy
  at the stride frequency 1/period and its harmonics on both axes (the DFT
  bins at multiples of H/period and W/period, DC excluded). Both energies are
  about the map's mean and summed over channels; the map is cut to whole
  periods from the top-left corner, where the network's grid starts.
  """
  values = np.asarray(probabilities, np.float64)
  if values.ndim == 2:
    values = values[:, :, None]
  rows, cols = (values.shape[0] // period) * period, (values.shape[1] // period) * period
  if rows == 0 or cols == 0:
    raise ValueError(f"a {values.shape[0]}x{values.shape[1]} map holds no whole {period}x{period} period")
  values = values[:rows, :cols]
  centred = values - values.mean(axis=(0, 1), keepdims=True)
  blocks = centred.reshape(rows // period, period, cols // period, period, -1)
  pattern = blocks.mean(axis=(0, 2))
  blocks_count = (rows // period) * (cols // period)
  return float(blocks_count * np.sum(pattern**2)), float(np.sum(centred**2))


def checkerboard_share(probabilities: npt.ArrayLike, period: int) -> float:
  """Share of a map's variance that repeats with the given period: 0 for a constant map, 1 for a pure checkerboard.

  A smooth ramp across N pixels gives (period^2 - 1) / (N^2 - 1).
  """
  periodic, total = checkerboard_energy(probabilities, period)
  # A constant map leaves only rounding residue (about 1e-33 per pixel): no pattern at all.
  return periodic / total if total > 1e-20 * np.size(probabilities) else 0.0


def t_interval(values: npt.ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
  """(mean, half-width) of the Student-t interval over seeds; half-width NaN for fewer than two values."""
  array = np.asarray(values, np.float64)
  if array.size == 0:
    return float("nan"), float("nan")
  mean = float(array.mean())
  if array.size < 2:
    return mean, float("nan")
  half = stats.t.ppf(0.5 + confidence / 2, array.size - 1) * array.std(ddof=1) / math.sqrt(array.size)
  return mean, float(half)


def summarise(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Per (regime, variant, upsampling): mean +/- 95 % t-interval of test mean IoU, paired difference vs bilinear, checkerboard."""
  # (regime, variant) -> upsampling -> seed -> the cell's record
  groups: dict[tuple[str, str], dict[str, dict[int, Mapping[str, Any]]]] = {}
  for record in records:
    groups.setdefault((record["regime"], record["variant"]), {}).setdefault(record["upsampling"], {})[
      record["seed"]
    ] = record
  rows: list[dict[str, Any]] = []
  for (regime, variant), by_upsampling in sorted(
    groups.items(), key=lambda item: (REGIMES.index(item[0][0]), item[0][1])
  ):
    reference = by_upsampling.get(REFERENCE, {})
    for upsampling in UPSAMPLINGS:
      seeds = by_upsampling.get(upsampling)
      if not seeds:
        continue
      values = [seeds[seed]["test_mean_iou"] for seed in sorted(seeds)]
      mean, half = t_interval(values)
      row: dict[str, Any] = {
        "regime": regime,
        "variant": variant,
        "upsampling": upsampling,
        "seeds": sorted(seeds),
        "train_images": next(iter(seeds.values()))["train_images"],
        "test_mean_iou": mean,
        "test_mean_iou_ci": half,
        "minutes_per_cell": float(np.mean([seeds[seed]["seconds"] for seed in seeds]) / 60),
      }
      paired = sorted(set(seeds) & set(reference))
      if upsampling != REFERENCE and paired:
        differences = [seeds[seed]["test_mean_iou"] - reference[seed]["test_mean_iou"] for seed in paired]
        row["paired_seeds"] = paired
        row["difference"], row["difference_ci"] = t_interval(differences)
      for key in ("share", "share_period32"):
        row[f"checkerboard_{key}"], row[f"checkerboard_{key}_ci"] = t_interval(
          [seeds[seed]["checkerboard"][key] for seed in seeds]
        )
        if upsampling != REFERENCE and paired:
          row[f"checkerboard_{key}_difference"], row[f"checkerboard_{key}_difference_ci"] = t_interval(
            [seeds[seed]["checkerboard"][key] - reference[seed]["checkerboard"][key] for seed in paired]
          )
      row["checkerboard_period"] = next(iter(seeds.values()))["checkerboard"]["period"]
      final_curves = [[point["val_mean_iou"] for point in seeds[seed]["val_curve"]] for seed in sorted(seeds)]
      row["val_mean_iou_by_epoch"] = (
        np.mean(final_curves, axis=0).tolist() if len({len(c) for c in final_curves}) == 1 else None
      )
      rows.append(row)
  return rows


DECODERS = ("fcn8s", "fcn4s", "fcn2s", "deconvnet")  # the decoder comparison, coarsest last fusion first
DECODER_REFERENCE = "fcn8s"


def cell_boundary_f1(
  predicted: Iterable[np.ndarray], truth: Iterable[np.ndarray], num_classes: int, tolerance: float = 2.0
) -> float | None:
  """Mean BF of a cell's test predictions: per class over the images, then over the classes (``model.training.boundary``)."""
  from model.training.boundary import BoundaryF1Mean, boundary_f1

  mean = BoundaryF1Mean(num_classes)
  for prediction, labels in zip(predicted, truth):
    mean.add(boundary_f1(labels, prediction, num_classes, tolerance))
  return mean.result([str(index) for index in range(num_classes)], tolerance)["mean_boundary_f1"]


def decoder_rows(
  records: Iterable[Mapping[str, Any]], boundary: Mapping[str, float | None] | None = None
) -> list[dict[str, Any]]:
  """Per decoder (full data, learned bilinear upsampling): quality with intervals, paired by seed against
  FCN-8s, and cost. ``boundary`` maps a cell id to its mean BF (cells whose masks were kept)."""
  boundary = boundary or {}
  by_variant: dict[str, dict[int, Mapping[str, Any]]] = {}
  for record in records:
    if record["regime"] == "full" and record["upsampling"] == REFERENCE and record["variant"] in DECODERS:
      by_variant.setdefault(record["variant"], {})[record["seed"]] = record
  reference = by_variant.get(DECODER_REFERENCE, {})
  rows: list[dict[str, Any]] = []
  for variant in DECODERS:
    seeds = by_variant.get(variant)
    if not seeds:
      continue
    row: dict[str, Any] = {"variant": variant, "seeds": sorted(seeds)}
    metrics: dict[str, Callable[[Mapping[str, Any]], Any]] = {
      "test_mean_iou": lambda r: r["test_mean_iou"],
      "test_boundary_f1": lambda r: boundary.get(r["id"]),
    }
    for name, value_of in metrics.items():
      values = {seed: value_of(record) for seed, record in seeds.items() if value_of(record) is not None}
      row[name], row[name + "_ci"] = t_interval(list(values.values()))
      row[name + "_by_seed"] = values
      base = {seed: value_of(record) for seed, record in reference.items() if value_of(record) is not None}
      paired = sorted(set(values) & set(base))
      if variant != DECODER_REFERENCE and paired:
        row[name + "_difference"], row[name + "_difference_ci"] = t_interval([values[s] - base[s] for s in paired])
        row[name + "_paired_seeds"] = paired
    first = next(iter(seeds.values()))
    row["parameters"] = first["parameters"]
    row["macs_per_pixel"] = first.get("macs_per_pixel")
    row["minutes_per_cell"] = float(np.mean([record["seconds"] for record in seeds.values()]) / 60)
    rows.append(row)
  return rows
