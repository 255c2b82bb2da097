"""What every engine offers (``OpenVinoSegmenter``, ``OnnxRuntimeSegmenter``, ``TensorFlowSegmenter``), as types.

``Engine`` is the interface ``model.engines.load`` returns; ``InputShape`` is what an engine reads of the
model's input (``transforms.imaging.input_spec.InputSpec``, or the card's input block from ``card_input``).
"""

from typing import Any, Protocol

import numpy as np

# (class ids [N, H, W] uint8, pixels per class [N, K] int64, confidence sums [N, K] float64, highest class id)
Stats = tuple[np.ndarray, np.ndarray, np.ndarray, int]


class InputShape(Protocol):
  """``images: <dtype> [N, H, W, channels]``."""

  @property
  def channels(self) -> int: ...

  @property
  def dtype(self) -> str: ...


class Engine(Protocol):
  """``<spec.dtype> [N, H, W, C]`` images -> (uint8 class ids, float32 confidence), and per-tile statistics."""

  engine: str
  precision: str
  spec: InputShape

  def describe(self) -> dict[str, Any]: ...

  def input_signature(self) -> tuple[str | None, int | None]: ...

  def declared_classes(self) -> int | None: ...

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

  def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

  def segment_with_stats(self, images: np.ndarray, owned: np.ndarray, num_classes: int) -> Stats: ...
