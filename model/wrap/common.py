"""What both model.wrap paths (Keras and ONNX) share, without importing either framework.

The error type, the settings a user declares for either wrap, the source
file's hash, and the normalisation a user declares: a JSON file, or the
named ImageNet preset that torchvision models expect. Kept free of
TensorFlow and ONNX so ``python -m model.wrap --onnx`` never pays for a
TensorFlow import.
"""

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from model.engines.openvino_ir import file_hash
from model.text import one_line

# The flags both wraps take, spelled here once so that model.wrap's parser and either wrap never need a framework.
INPUT_DTYPES = ("uint8", "uint16")  # model.artifact.export.INPUT_DTYPES and model.wrap.onnx_graph.PIXEL_TYPES
PAD_MODES = ("symmetric", "zero")  # model.network.layers.PAD_MODES, without importing Keras
LAYOUTS = ("auto", "NCHW", "NHWC")  # of an ONNX model's input

# torchvision's ImageNet statistics, for pixels scaled to 0-1.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = ("imagenet",)


class WrapError(ValueError):
  """A model or flag combination that cannot be wrapped; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class WrapSettings:
  """What the user declares about the served graph, the same for either wrap: the flags of the same names.

  ``normalization`` is a card's block (``read_normalization``; by default the
  model gets float pixel values, x*1+0); ``name`` is the card's (by default
  the model file's name). Built only from values both wraps can take: the
  refusal comes before anything is read.
  """

  normalization: dict[str, Any] = dataclasses.field(default_factory=lambda: {"scale": 1.0, "offset": 0.0})
  output: str = "auto"
  input_dtype: str = "uint8"
  size_multiple: int | None = None
  padding: str = "symmetric"
  name: str | None = None
  version: str = "1.0.0"

  def __post_init__(self) -> None:
    if self.input_dtype not in INPUT_DTYPES:
      raise WrapError(f"--input_dtype {self.input_dtype} is not one of {INPUT_DTYPES}")
    if self.padding not in PAD_MODES:
      raise WrapError(f"--padding {self.padding} is not one of {PAD_MODES}")
    if self.size_multiple is not None and self.size_multiple < 1:
      raise WrapError(f"--size_multiple {self.size_multiple} must be a positive integer")

  @property
  def dtype(self) -> np.dtype:
    """The pixel type the pipeline feeds, as numpy's."""
    return np.dtype(self.input_dtype)


sha256_of = file_hash  # a file's sha256 hex digest, as model.engines keys converted IRs by it


def imagenet_normalization(input_dtype: str = "uint8") -> dict[str, list[float]]:
  """The ImageNet preset in the card's pixel units: x/max then (x - mean)/std is (x - mean*max)/(std*max)."""
  top = float(np.iinfo(np.dtype(input_dtype)).max)
  return {
    "mean": [round(value * top, 6) for value in IMAGENET_MEAN],
    "std": [round(value * top, 6) for value in IMAGENET_STD],
  }


def read_normalization(value: str, input_dtype: str = "uint8") -> dict[str, Any]:
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


def check_normalization(normalization: Mapping[str, Any], channels: int) -> None:
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


# Probing a model's geometry and output, the same for every framework (no Keras or ONNX imports here).
SIZE_MULTIPLES = (1, 2, 4, 8, 16, 32, 64, 128)
PROBE_MIN_SIZE = 40  # probes smaller than this would fail deep models for the wrong reason


def _odd_at_least(value: float) -> int:
  value = max(1, math.ceil(value))
  return value if value % 2 else value + 1


def probe_sizes(multiple: int) -> tuple[int, int]:
  """Two sizes that are odd multiples of ``multiple``: they pass only if that multiple suffices."""
  factor = _odd_at_least(PROBE_MIN_SIZE / multiple)
  return multiple * factor, multiple * (factor + 2)


def probe_images(batch: int, height: int, width: int, channels: int, dtype: npt.DTypeLike, seed: int = 0) -> np.ndarray:
  """Random pixels over the whole range of ``dtype``: a probe batch [batch, height, width, channels]."""
  top = np.iinfo(dtype).max
  return np.random.default_rng(seed).integers(0, top + 1, size=(batch, height, width, channels), dtype=dtype)


def output_stride(inputs: np.ndarray, scores: np.ndarray, why: str = "") -> int:
  """The one integer stride from a probe batch's height and width (NHWC) to its scores'; else a WrapError.

  ``why`` ends the message with what usually causes a mismatch in that framework.
  """
  height, width = inputs.shape[1:3]
  out_height, out_width = scores.shape[1:3]
  if out_height < 1 or height % out_height or width % out_width or height // out_height != width // out_width:
    raise WrapError(
      f"the model returns {out_height}x{out_width} for a {height}x{width} input; the output must be the input "
      f"size divided by one integer stride{why}"
    )
  return height // out_height


def search_multiple(
  stride_at: Callable[[int, int, int], int], size_multiple: int | None = None, reason_limit: int = 200
) -> tuple[int, int]:
  """(size multiple, output stride): the first multiple at which the model runs, checked by probing.

  ``stride_at(height, width, seed)`` runs one probe batch and returns the output stride, raising on failure;
  each multiple is tried at probe_sizes and with the sides swapped, which must give the same stride. Tries
  SIZE_MULTIPLES in order, or only ``size_multiple`` when given.
  """
  reasons: list[str] = []
  for multiple in (size_multiple,) if size_multiple else SIZE_MULTIPLES:
    height, width = probe_sizes(multiple)
    try:
      stride = stride_at(height, width, 0)
      if stride_at(width, height, 1) != stride:
        raise WrapError("the output stride depends on the input size")
      return multiple, stride
    except Exception as exc:
      reasons.append(f"{height}x{width}: {type(exc).__name__}: {one_line(exc, reason_limit)}")
  if size_multiple:
    raise WrapError(f"the model does not run at multiples of --size_multiple {size_multiple} ({reasons[0]})")
  raise WrapError(
    f"the model ran at no size that is a multiple of {SIZE_MULTIPLES[-1]} or less (last: {reasons[-1]}); "
    "pass --size_multiple N if it needs another one"
  )


def resolve_output(
  detected: str,
  requested: str,
  channels: int,
  num_classes: int,
  log: Callable[[str], object] = print,
  last: str = "layer",
) -> str:
  """The ScoresToLogits kind for the model's output, after checking its channels against the class list.

  ``detected`` is what the model's ``last`` layer (Keras) or node (ONNX) applies.
  """
  kind = detected if requested == "auto" else requested
  if requested not in ("auto", detected) and detected != "logits":
    log(f"warning: the model's last {last} applies {detected} but --output {requested} was given; using {requested}")
  if kind == "sigmoid" and channels != 1:
    raise WrapError(
      f"--output sigmoid needs one output channel but the model has {channels}; use --output softmax or logits"
    )
  if channels == 1:
    if kind == "softmax":
      raise WrapError(
        "a softmax over one output channel is always 1; a one-channel model needs --output sigmoid or logits"
      )
    if num_classes != 2:
      raise WrapError(
        f"a one-channel ({kind}) model has two classes (background and the class) but the classes file lists "
        f"{num_classes}; list exactly 2"
      )
    return "sigmoid" if kind == "sigmoid" else "binary_logit"
  if channels != num_classes:
    raise WrapError(
      f"the model has {channels} output channels but the classes file lists {num_classes} classes; they must match"
    )
  return kind


def check_scores(outputs: np.ndarray, kind: str) -> None:
  """Refuse outputs that are not finite, or not probabilities when the output is declared as such."""
  if not np.all(np.isfinite(outputs)):
    raise WrapError(
      "the model's outputs on a probe batch are not finite (NaN or inf); check the model and its --normalization"
    )
  if kind in ("softmax", "sigmoid") and (outputs.min() < -1e-6 or outputs.max() > 1 + 1e-6):
    raise WrapError(
      f"--output {kind} declares probabilities but the model returned values in [{outputs.min():.3g}, "
      f"{outputs.max():.3g}]; use --output logits"
    )
