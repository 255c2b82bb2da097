"""Run-to-run drift: do tonight's masks look like last night's?

A nightly job that segments a new partition every night has no ground truth,
but it can notice when the output changes character: a class that suddenly
covers much more or less of the pixels, or whose per-image coverage is
distributed differently (a sensor fault, a new kind of image, a broken
model). ``--compare_to PREVIOUS_OUT`` (``pipeline.run``), or afterwards

    python -m pipeline.drift OUT --compare_to PREVIOUS_OUT [--drift_threshold X] [--fail_on_drift]

reads both runs' ``summary.json`` and per-image stats (with the report's
readers, so JSON Lines, CSV, Parquet and ``gs://`` work) and adds a ``drift``
block to ``OUT/summary.json`` (``pipeline.post_run.summary`` writes it; this
module only computes it). Per class it holds the previous and current
share of all pixels, the change in percentage points, and two statistics of
the per-image class fractions:

- the Population Stability Index over ``PSI_BINS`` equal bins of [0, 1],
  ``PSI = sum_i (c_i - p_i) * ln(c_i / p_i)`` with ``p_i``/``c_i`` the previous
  and current share of images in bin ``i``, each floored at ``PSI_EPSILON`` so
  an empty bin stays finite (Siddiqi, *Credit Risk Scorecards*, Wiley 2006,
  ch. 8; Yurdakul, *Statistical properties of population stability index*,
  Western Michigan University 2018);
- the two-sample Kolmogorov-Smirnov statistic (largest distance between the
  two empirical CDFs, what ``scipy.stats.ks_2samp`` reports as ``statistic``;
  computed with numpy because scipy is not a runtime dependency).

A class is flagged when its pixel share moved by more than ``--drift_threshold``
(a fraction: 0.05 = 5 percentage points), or when its PSI is above 0.25
(Siddiqi's "significant shift"; 0.1-0.25 is "some change") *and* above the
95 % sampling-noise level for these image counts, ``chi2_0.95(PSI_BINS - 1) *
(1/n_previous + 1/n_current)`` (Yurdakul 2018): with 20 images a night, two
samples of the very same distribution give a PSI near 1 by chance alone.

The per-image fractions of both runs are held in memory (8 bytes per image
and class), unlike the report's constant-memory histograms, because the KS
statistic needs them exactly.
"""

import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline.errors import OptionsError
from pipeline.paths import absolute, is_local
from pipeline.report import load

_LOG = logging.getLogger("deconvseg")

DEFAULT_THRESHOLD = 0.05
PSI_BINS = 10
PSI_EPSILON = 1e-4
PSI_THRESHOLD = 0.25
# scipy.stats.chi2.ppf(0.95, PSI_BINS - 1): the 95th percentile of chi-square with 9 degrees of freedom.
CHI2_95 = 16.918977604620448
EXIT_CODE = 4


class DriftDetected(RuntimeError):
  """``--fail_on_drift`` and a class moved more than the threshold (every output is written)."""


def bin_shares(fractions: Sequence[float] | np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
  """Share of the values in each of ``bins`` bins [i/bins, (i+1)/bins) of [0, 1] (1.0 in the last bin).

  Edges are ``i / bins`` (correctly rounded), not ``np.linspace``'s: a fraction
  such as 6/20 then lands in the bin that starts at 0.3 and not, by one ulp,
  in the one below (np.linspace(0, 1, 11)[3] is 0.30000000000000004).
  """
  values = np.clip(np.asarray(fractions, np.float64), 0.0, 1.0)
  edges = np.arange(bins + 1) / bins
  index = np.minimum(np.searchsorted(edges, values, side="right") - 1, bins - 1)
  return np.bincount(index, minlength=bins) / max(len(values), 1)


def population_stability_index(
  previous: Sequence[float] | np.ndarray,
  current: Sequence[float] | np.ndarray,
  bins: int = PSI_BINS,
  epsilon: float = PSI_EPSILON,
) -> Optional[float]:
  """PSI of ``current`` against ``previous`` over fixed bins of [0, 1]; None when either is empty."""
  if not len(previous) or not len(current):
    return None
  expected = np.maximum(bin_shares(previous, bins), epsilon)
  actual = np.maximum(bin_shares(current, bins), epsilon)
  return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_statistic(previous: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray) -> Optional[float]:
  """Two-sample Kolmogorov-Smirnov statistic sup |F_prev - F_cur|; None when either sample is empty."""
  first, second = np.sort(np.asarray(previous, np.float64)), np.sort(np.asarray(current, np.float64))
  if not len(first) or not len(second):
    return None
  points = np.concatenate([first, second])
  cdf_first = np.searchsorted(first, points, side="right") / len(first)
  cdf_second = np.searchsorted(second, points, side="right") / len(second)
  return float(np.max(np.abs(cdf_first - cdf_second)))


def psi_noise_level(images_previous: int, images_current: int) -> Optional[float]:
  """The PSI (over PSI_BINS bins) that two samples of one distribution stay below 95 % of the time, asymptotically."""
  if not images_previous or not images_current:
    return None
  return CHI2_95 * (1.0 / images_previous + 1.0 / images_current)


def _run_exists(path: str) -> bool:
  if is_local(path):
    return os.path.isdir(path)
  try:
    return any(result.metadata_list for result in FileSystems.match([path + "/**"], limits=[1]))
  except Exception:  # no object under the prefix
    return False


def check_compare_to(compare_to: str, output: str) -> Optional[str]:
  """The previous run's directory, checked before any work; None (with a warning) when it does not exist.

  A missing directory is the first night of a schedule, so it is not an error.
  A directory without a readable ``summary.json`` is: that run did not finish
  (the summary is written last) or the path names something else.
  """
  previous = absolute(compare_to).rstrip("/") or "/"
  if previous == output:
    raise OptionsError(
      f"--compare_to {previous} is this run's --output: compare with an earlier run's output, "
      "e.g. --compare_to '/data/masks/{prev_date}'."
    )
  if not _run_exists(previous):
    _LOG.warning(
      "--compare_to %s does not exist (the first night of a schedule?): no drift is computed "
      "and --fail_on_drift cannot fail this run.",
      previous,
    )
    return None
  problems: List[str] = []
  summary = load.read_summary(previous, problems)
  if not isinstance(summary.get("classes"), list) or not summary.get("classes"):
    reason = problems[0] if problems else f"{load.SUMMARY_FILE} has no per-class totals"
    raise OptionsError(
      f"--compare_to {previous} is not a finished deconvseg run ({reason}). Finish that run "
      "(re-run it with --skip_existing) or point --compare_to at another run's output."
    )
  run = _local_files(load.run_summary(summary), previous)
  counts = load.as_dict(summary.get("counts"))
  if counts.get("segmented") and not load.stats_files(previous, run):
    raise OptionsError(
      f"--compare_to {previous} has a summary.json but no stats/ files to compare per-image class fractions with."
    )
  return previous


def check_threshold(threshold: Optional[float]) -> float:
  """``--drift_threshold`` as a number in [0, 1] (DEFAULT_THRESHOLD when not given)."""
  value = DEFAULT_THRESHOLD if threshold is None else threshold
  if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
    raise OptionsError(
      f"--drift_threshold={threshold} is out of range: it must be between 0 and 1 "
      "(a fraction of all pixels: 0.05 = 5 percentage points)."
    )
  return float(value)


def _local_files(run: load.RunSummary, output: str) -> load.RunSummary:
  """Files the summary lists outside ``output`` belong to where the run was written, not to this copy."""
  run.stats_files = [path for path in run.stats_files if path.startswith(output + "/")]
  run.failure_files = [path for path in run.failure_files if path.startswith(output + "/")]
  return run


def read_run(
  output: str, problems: List[str], summary: Optional[Dict[str, Any]] = None
) -> Tuple[Dict[str, Any], Dict[str, float], Dict[str, np.ndarray], int]:
  """(summary, {class: share of pixels}, {class: per-image fractions}, images) of a finished run.

  ``summary``: the run's summary when the caller holds it already (then OUT/summary.json is not read).
  """
  if summary is None:
    summary = load.read_summary(output, problems)
  entries = [entry for entry in summary.get("classes") or [] if isinstance(entry, dict)]
  shares = {str(entry.get("name")): float(load.number(entry.get("fraction"), 0.0)) for entry in entries}
  run = _local_files(load.run_summary(summary), output)
  columns: Dict[str, List[float]] = {name: [] for name in shares}
  images = 0
  for row in load.iter_rows(load.stats_files(output, run), problems):
    record = load.image_record(row, output)
    for name in record.fractions:
      if name not in columns:  # a class this run's summary lacks: 0 in the earlier images
        columns[name] = [0.0] * images
    for name, values in columns.items():
      values.append(float(record.fractions.get(name, 0.0)))
    images += 1
  return summary, shares, {name: np.asarray(values, np.float64) for name, values in columns.items()}, images


def compute_drift(
  output: str, compare_to: str, threshold: float = DEFAULT_THRESHOLD, summary: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
  """The ``drift`` block of ``output`` against the earlier run in ``compare_to`` (both finished runs).

  ``summary``: ``output``'s summary when the caller holds it (the launcher does), so it is not read back.
  """
  problems: List[str] = []
  summary, shares, fractions, images = read_run(output, problems, summary)
  prev_summary, prev_shares, prev_fractions, prev_images = read_run(compare_to, problems)
  names = list(dict.fromkeys(list(shares) + list(fractions) + list(prev_shares) + list(prev_fractions)))
  comparable = bool(load.number(summary.get("pixels"), 0)) and bool(load.number(prev_summary.get("pixels"), 0))
  noise = psi_noise_level(prev_images, images)
  classes: List[Dict[str, Any]] = []
  flagged: List[str] = []
  for name in names:
    previous, current = prev_shares.get(name, 0.0), shares.get(name, 0.0)
    psi = population_stability_index(
      prev_fractions.get(name, np.zeros(prev_images)), fractions.get(name, np.zeros(images))
    )
    reasons: List[str] = []
    if comparable and abs(current - previous) > threshold:
      reasons.append("share")
    if psi is not None and psi > PSI_THRESHOLD and noise is not None and psi > noise:
      reasons.append("psi")
    classes.append(
      {
        "name": name,
        "previous_share": previous if comparable else None,
        "current_share": current if comparable else None,
        "change_pp": 100.0 * (current - previous) if comparable else None,
        "psi": psi,
        "ks": ks_statistic(prev_fractions.get(name, np.zeros(prev_images)), fractions.get(name, np.zeros(images))),
        "flagged_by": reasons,
      }
    )
    if reasons:
      flagged.append(name)
  return {
    "compare_to": compare_to,
    "previous_end_time": prev_summary.get("end_time"),
    # A new model changes the masks by itself: say so next to the numbers it moved.
    "models": {"previous": _model(prev_summary), "current": _model(summary)},
    "images": {"previous": prev_images, "current": images},
    "threshold": threshold,
    "psi_threshold": PSI_THRESHOLD,
    "psi_noise_level": noise,
    "psi_bins": PSI_BINS,
    "psi_epsilon": PSI_EPSILON,
    "classes": classes,
    "flagged": flagged,
    "problems": problems,
  }


def _model(summary: Dict[str, Any]) -> Dict[str, Any]:
  model = summary.get("model")
  if not isinstance(model, dict):
    model = {}
  return {"name": model.get("name"), "version": model.get("version")}


def check_drift(drift: Optional[Dict[str, Any]], fail_on_drift: bool) -> None:
  """Logs flagged classes; raises DriftDetected with ``fail_on_drift`` when any class is flagged."""
  if not drift or not drift.get("flagged"):
    return
  moved = ", ".join(_describe(entry) for entry in drift["classes"] if entry["name"] in drift["flagged"])
  message = (
    f"drift against {drift['compare_to']}: {moved} (share threshold {drift['threshold']:g}, "
    f"PSI threshold {drift['psi_threshold']:g})."
  )
  if fail_on_drift:
    raise DriftDetected(message + " Every output was written; see the drift block of summary.json.")
  _LOG.warning("%s", message)


def _describe(entry: Dict[str, Any]) -> str:
  change = "" if entry["change_pp"] is None else f"{entry['change_pp']:+.1f} pp"
  psi = "" if entry["psi"] is None else f"PSI {entry['psi']:.2f}"
  return f"{entry['name']} ({', '.join(part for part in (change, psi) if part)})"


def format_drift(drift: Dict[str, Any]) -> str:
  """Lines for the end-of-run table."""
  images = drift["images"]
  lines = [
    f"Drift against {drift['compare_to']} ({images['previous']} images then, {images['current']} now):",
    f"{'class':<16}{'then':>9}{'now':>9}{'change':>11}{'PSI':>8}{'KS':>7}",
  ]
  percent = lambda value: "-" if value is None else f"{value * 100:.2f}%"  # noqa: E731
  number = lambda value, digits: "-" if value is None else f"{value:.{digits}f}"  # noqa: E731
  for entry in drift["classes"]:
    change = "-" if entry["change_pp"] is None else f"{entry['change_pp']:+.2f} pp"
    lines.append(
      f"{entry['name'][:15]:<16}{percent(entry['previous_share']):>9}{percent(entry['current_share']):>9}"
      f"{change:>11}{number(entry['psi'], 3):>8}{number(entry['ks'], 3):>7}"
      + ("  FLAGGED" if entry["flagged_by"] else "")
    )
  return "\n".join(lines)
