"""What both model.wrap paths (Keras and ONNX) share, without importing either framework.

The error type, the source file's hash, and the normalisation a user
declares: a JSON file, or the named ImageNet preset that torchvision models
expect. Kept free of TensorFlow and ONNX so ``python -m model.wrap --onnx``
never pays for a TensorFlow import.
"""

import hashlib
import json

import numpy as np

# torchvision's ImageNet statistics, for pixels scaled to 0-1.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = ("imagenet",)


class WrapError(ValueError):
  """A model or flag combination that cannot be wrapped; the message says how to fix it."""


def sha256_of(path):
  digest = hashlib.sha256()
  with open(path, "rb") as handle:
    for block in iter(lambda: handle.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def imagenet_normalization(input_dtype="uint8"):
  """The ImageNet preset in the card's pixel units: x/max then (x - mean)/std is (x - mean*max)/(std*max)."""
  top = float(np.iinfo(np.dtype(input_dtype)).max)
  return {
    "mean": [round(value * top, 6) for value in IMAGENET_MEAN],
    "std": [round(value * top, 6) for value in IMAGENET_STD],
  }


def read_normalization(value, input_dtype="uint8"):
  """A normalisation block from a preset name or a JSON file (the block, {"normalization": ...}, or a card's input)."""
  if value in PRESETS:
    return imagenet_normalization(input_dtype)
  try:
    with open(value) as handle:
      data = json.load(handle)
  except (OSError, json.JSONDecodeError) as exc:
    raise WrapError(
      f"--normalization {value} is neither a preset ({', '.join(PRESETS)}) nor a JSON file ({exc})"
    ) from None
  if isinstance(data, dict) and isinstance(data.get("input"), dict):
    data = data["input"].get("normalization")
  elif isinstance(data, dict) and "normalization" in data:
    data = data["normalization"]
  if isinstance(data, dict) and set(data) >= {"mean", "std"}:
    return {"mean": [float(v) for v in data["mean"]], "std": [float(v) for v in data["std"]]}
  if isinstance(data, dict) and set(data) >= {"scale", "offset"}:
    return {"scale": float(data["scale"]), "offset": float(data["offset"])}
  raise WrapError(
    f'--normalization {value} must hold {{"mean": [...], "std": [...]}} (one per band) or '
    '{"scale": S, "offset": O}, as in a card\'s input.normalization'
  )


def check_normalization(normalization, channels):
  """Refuses a per-band normalisation whose length is not the model's band count, or a std that is not positive."""
  if "mean" not in normalization:
    return
  mean, std = list(normalization["mean"]), list(normalization["std"])
  if len(mean) != channels or len(std) != channels:
    raise WrapError(
      f"the normalisation has {len(mean)} mean and {len(std)} std values but the model takes {channels} bands; "
      "give one per band"
    )
  if min(std) <= 0:
    raise WrapError(f"the normalisation's std values must be positive, got {std}")
