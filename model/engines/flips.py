"""Test-time flips (``--tta flips``): class probabilities averaged over the four flips of every tile.

Each batch goes to the engine once, as four times the batch: the tiles as
they are, mirrored left-right, upside down, and both. The probabilities come
back, are flipped back into place and averaged, and only then become class
ids and confidence, so the pipeline downstream sees the ordinary contract.
Boundaries gain most (docs/MODEL.md, "Test-time flips"), at about four
times the model time. The pipeline quarters its pixel budget per engine call
under this option, so one call holds no more pixels than without it.
"""

from typing import Any

import numpy as np

from model.engines.engine import Stats
from model.engines.openvino_engine import OpenVinoSegmenter, per_class_sums

# (rows reversed, columns reversed) of each view, in the order they are stacked.
VIEWS = ((False, False), (False, True), (True, False), (True, True))


def flip(batch: np.ndarray, rows: bool, columns: bool) -> np.ndarray:
  """``batch`` [N, H, W, ...] mirrored along its rows and/or columns (its own inverse)."""
  if rows:
    batch = batch[:, ::-1]
  if columns:
    batch = batch[:, :, ::-1]
  return batch


class FlipAveragedSegmenter:
  """Wraps a segmenter that has ``predict_probabilities``; same contract as every engine, four flips inside."""

  tta = "flips"

  def __init__(self, segmenter: OpenVinoSegmenter) -> None:
    self.segmenter = segmenter
    self.engine = segmenter.engine
    self.precision = segmenter.precision
    self.spec = segmenter.spec

  def describe(self) -> dict[str, Any]:
    return dict(self.segmenter.describe(), tta=self.tta)

  def input_signature(self) -> tuple[str | None, int | None]:
    return self.segmenter.input_signature()

  def declared_classes(self) -> int | None:
    return self.segmenter.declared_classes()

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.predict(images)

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """float32 [N, H, W, classes]: the mean of the four views' probabilities, each flipped back into place."""
    count = len(images)
    views = np.concatenate([flip(images, rows, columns) for rows, columns in VIEWS])
    stacked = self.segmenter.predict_probabilities(views)
    total = np.zeros((count,) + stacked.shape[1:], np.float32)
    for index, (rows, columns) in enumerate(VIEWS):
      total += flip(stacked[index * count : (index + 1) * count], rows, columns)
    return total / np.float32(len(VIEWS))

  def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 class ids, float32 confidence) of the averaged probabilities; an empty batch gives empty maps."""
    images = np.ascontiguousarray(images)
    if images.shape[0] == 0:
      return np.zeros(images.shape[:3], np.uint8), np.zeros(images.shape[:3], np.float32)
    mean = self.probabilities(images)
    return mean.argmax(axis=-1).astype(np.uint8), mean.max(axis=-1)

  def segment_with_stats(self, images: np.ndarray, owned: np.ndarray, num_classes: int) -> Stats:
    """Same contract as the other engines': (class ids, pixels per class, confidence sums, max id)."""
    class_ids, confidence = self.predict(images)
    return (class_ids,) + per_class_sums(class_ids, confidence, owned, num_classes)
