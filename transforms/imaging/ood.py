"""Out-of-distribution check: does an image look like what the model was trained and tested on?

A model is confidently wrong on inputs unlike its training data (the bundled
one, trained on texture mosaics, calls most of a photographed rocket
"water" at 94 % confidence), so each image is compared with what its card
records (``trained_on.band_stats`` and ``metrics.test.image_confidence``):

* ``low_confidence``: its mean confidence is below the test split's 1st
  percentile of per-image mean confidence;
* ``out_of_range``: more than ``OUTSIDE_LIMIT`` of its sampled pixels have a
  band outside the training split's [p01, p99] (about 2 % by construction on
  data like the training set; at most 34 % measured on 500 training images);
* ``band_mean``: a band's mean lies outside the training split's [p01, p99].

Features come from a strided subsample of the decoded pixels (at most about
``SAMPLE_PIXELS``), so the check costs well under a millisecond per image.
Thresholds were chosen by measurement (``python -m bench.ood``; docs/MODEL.md).
A card without a reference (a ``model.wrap`` model has no training statistics
and no test metrics) gets only the checks it can support, and the summary says
which were skipped.
"""

import math
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

SAMPLE_PIXELS = 16384
OUTSIDE_LIMIT = 0.35
CONFIDENCE_QUANTILE = "p01"
MAX_LISTED = 20


class OodFeatures(NamedTuple):
  """Per-image features, computed at decode (the pixels are in hand there)."""

  band_mean: List[float]
  band_std: List[float]
  outside_fraction: Optional[float]  # None when the card has no training range


def sample_stride(height: int, width: int, budget: int = SAMPLE_PIXELS) -> int:
  return max(1, math.ceil(math.sqrt(height * width / budget)))


def image_features(
  pixels: np.ndarray, low: Optional[np.ndarray] = None, high: Optional[np.ndarray] = None
) -> OodFeatures:
  """Band mean/std and the share of sampled pixels outside [low, high] in any band."""
  stride = sample_stride(*pixels.shape[:2])
  # Bands as contiguous rows: numpy reduces along rows several times faster than down [N, C] columns.
  bands = np.ascontiguousarray(pixels[::stride, ::stride].reshape(-1, pixels.shape[-1]).T, dtype=np.float32)
  outside = None
  if low is not None and high is not None and len(low) == len(bands):
    beyond = (bands < np.reshape(low, (-1, 1))) | (bands > np.reshape(high, (-1, 1)))
    outside = round(np.count_nonzero(beyond.max(axis=0)) / bands.shape[1], 4)
  return OodFeatures(
    [round(float(v), 2) for v in bands.mean(axis=1)], [round(float(v), 2) for v in bands.std(axis=1)], outside
  )


class OodRule:
  """The thresholds taken from one model card; ``check`` applies them to one image."""

  def __init__(
    self,
    band_stats: Optional[dict] = None,
    min_confidence: Optional[float] = None,
    outside_limit: float = OUTSIDE_LIMIT,
  ) -> None:
    self.band_stats = band_stats if band_stats and band_stats.get("p01") and band_stats.get("p99") else None
    self.min_confidence = min_confidence
    self.outside_limit = outside_limit

  @classmethod
  def from_card(cls, card: dict) -> "OodRule":
    trained_on = card.get("trained_on") or {}
    test = (card.get("metrics") or {}).get("test") or {}
    quantiles = test.get("image_confidence") or {}
    return cls(trained_on.get("band_stats"), quantiles.get(CONFIDENCE_QUANTILE))

  @property
  def range(self) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(low, high) arrays of the training split's per-band p01 and p99, or (None, None)."""
    if not self.band_stats:
      return None, None
    return (np.asarray(self.band_stats["p01"], np.float32), np.asarray(self.band_stats["p99"], np.float32))

  def describe(self) -> dict:
    """The rule and its thresholds, as summary.json reports them."""
    unavailable = []
    if self.min_confidence is None:
      unavailable.append("low_confidence: the card has no metrics.test.image_confidence")
    if self.band_stats is None:
      unavailable.append("out_of_range, band_mean: the card has no trained_on.band_stats")
    return {
      "rule": (
        "flagged when any check fails: low_confidence (mean confidence < min_confidence, the test "
        f"split's {CONFIDENCE_QUANTILE} of per-image mean confidence), out_of_range (share of sampled "
        "pixels with a band outside the training [p01, p99] > outside_limit), band_mean (a band's mean "
        "outside the training [p01, p99])"
      ),
      "min_confidence": self.min_confidence,
      "outside_limit": self.outside_limit if self.band_stats else None,
      "band_p01": self.band_stats["p01"] if self.band_stats else None,
      "band_p99": self.band_stats["p99"] if self.band_stats else None,
      "unavailable": unavailable,
    }

  def check(self, features: Optional[OodFeatures], mean_confidence: float) -> dict:
    """The stats record's ``ood`` block: flagged, reasons (one line each) and the features."""
    reasons = []
    if self.min_confidence is not None and mean_confidence < self.min_confidence:
      reasons.append(f"low_confidence: mean confidence {mean_confidence:.3f} < {self.min_confidence:.3f}")
    if features is not None and self.band_stats is not None:
      if features.outside_fraction is not None and features.outside_fraction > self.outside_limit:
        reasons.append(
          f"out_of_range: {features.outside_fraction:.0%} of pixels outside the training "
          f"[p01, p99] > {self.outside_limit:.0%}"
        )
      for band, (mean, low, high) in enumerate(zip(features.band_mean, self.band_stats["p01"], self.band_stats["p99"])):
        if not low <= mean <= high:
          reasons.append(f"band_mean: band {band} mean {mean:.1f} outside the training [{low:g}, {high:g}]")
    return {
      "flagged": bool(reasons),
      "reasons": reasons,
      "band_mean": features.band_mean if features else None,
      "band_std": features.band_std if features else None,
      "outside_fraction": features.outside_fraction if features else None,
    }


def summarise(checked: int, flagged: int, flagged_keys: Sequence[str], rule: dict) -> dict:
  """summary.json's ``ood`` block."""
  return dict(
    rule, checked=checked, flagged=flagged, flagged_keys=sorted(flagged_keys)[:MAX_LISTED], max_listed=MAX_LISTED
  )
