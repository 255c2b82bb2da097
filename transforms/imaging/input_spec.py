"""What the exported model takes as input, read from its card (``card["input"]``).

One small value object travels from the start-up checks to decoding and
inference, so every step agrees on the array the model is fed: ``channels``
bands of ``dtype`` per pixel. Normalisation happens inside the model, so the
pipeline needs nothing else (``color`` only words messages).
"""

from dataclasses import dataclass, field

import numpy as np

DTYPES = ("uint8", "uint16")
MAX_CHANNELS = 64


@dataclass(frozen=True)
class InputSpec:
  """``images: <dtype> [N, H, W, channels]``; old cards without these keys mean uint8 RGB."""

  channels: int = 3
  dtype: str = "uint8"
  color: str = field(default="RGB", compare=False)  # wording only: same array, same spec

  @classmethod
  def from_card(cls, card: dict) -> "InputSpec":
    """The card's input block, checked; raises ValueError with a one-line reason."""
    block = card.get("input") if isinstance(card, dict) else None
    if block is None:
      block = {}
    if not isinstance(block, dict):
      raise ValueError("'input' must be an object with dtype and channels")
    dtype = block.get("dtype", "uint8")
    if dtype not in DTYPES:
      raise ValueError(f"input.dtype {dtype!r} is not supported; it must be one of {', '.join(DTYPES)}")
    channels = block.get("channels", 3)
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
      raise ValueError(f"input.channels {channels!r} must be an integer from 1 to {MAX_CHANNELS}")
    color = block.get("color")
    if not isinstance(color, str) or not color:
      color = {1: "grey", 3: "RGB"}.get(channels, "bands")
    return cls(channels=channels, dtype=dtype, color=color)

  @property
  def numpy_dtype(self) -> np.dtype:
    return np.dtype(self.dtype)

  @property
  def max_value(self) -> int:
    return int(np.iinfo(self.dtype).max)

  def describe(self) -> str:
    """How people name this input, e.g. '3-band uint8 (RGB)'."""
    return f"{self.channels}-band {self.dtype} ({self.color})"


DEFAULT_SPEC = InputSpec()
