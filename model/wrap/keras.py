"""model.wrap --keras: a user's Keras 3 model as this project's exported model directory (SavedModel + IR).

The served graph is an adapter around the model (``model.wrap.adapter``),
traced once into a SavedModel that loads with TensorFlow alone; the model
is probed first (``model.wrap.probe``) and the written SavedModel reloaded
and checked against the in-memory adapter.
"""

import importlib
import os
import shutil
from collections.abc import Callable
from typing import Any

import keras

from model.artifact.card import CARD_FORMAT, color_name, created_now
from model.artifact.export import SegmentationModule, save_module, signatures_block, write_card
from model.artifact.export_openvino import add_ir
from model.data import classes as classes_module
from model.network.fcn import normalization_layer
from model.text import one_line
from model.wrap.adapter import build_adapter, verify
from model.wrap.common import WrapError, WrapSettings, check_scores, probe_sizes, resolve_output, sha256_of
from model.wrap.probe import detect_output, find_geometry, model_input, probe_inputs, run_probe


def load_keras_model(path: str, custom_objects_module: str | None = None, unsafe: bool = False) -> Any:
  """The user's model, loaded with safe_mode unless told otherwise, custom layers registered first."""
  if not os.path.isfile(path):
    raise WrapError(f"--keras {path}: no such file; give the .keras file your model was saved to")
  if custom_objects_module:
    try:
      importlib.import_module(custom_objects_module)
    except ImportError as exc:
      raise WrapError(
        f"--custom_objects_module {custom_objects_module} cannot be imported ({exc}); "
        "put its folder on PYTHONPATH or run from the folder that contains it"
      ) from None
  try:
    return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
  except Exception as exc:
    message = one_line(exc)
    if "safe_mode" in message or "unsafe_deserialization" in message:
      raise WrapError(
        f"{path} holds a Lambda layer (Python bytecode that would run on load) and is refused in safe "
        "mode; if you trust the file, pass --unsafe_deserialization"
      ) from None
    if "Could not locate" in message:
      located = message[message.index("Could not locate") :].split(".")[0]
      raise WrapError(
        f"{path} uses a custom layer keras does not know ({located}); pass --custom_objects_module "
        "with the module whose @keras.saving.register_keras_serializable classes define it"
      ) from None
    raise WrapError(f"cannot load {path} as a Keras 3 model ({type(exc).__name__}: {message[:300]})") from None


def _normalisation_layer(normalization: dict[str, Any], channels: int) -> Any:
  """The Keras layer that normalises pixels as declared; a WrapError when it does not fit the model's bands."""
  try:
    return normalization_layer(normalization, channels)
  except ValueError as exc:
    raise WrapError(f"the normalisation does not fit the model's {channels}-band input: {exc}") from None


def _probe_served_settings(
  model: Any,
  fixed_size: tuple[int, int] | None,
  channels: int,
  declared: WrapSettings,
  num_classes: int,
  log: Callable[[str], object],
) -> tuple[int, int, str]:
  """(size multiple, output stride, output kind) of the user's model, found by probing it."""
  normalise = _normalisation_layer(declared.normalization, channels)
  multiple, stride = find_geometry(model, fixed_size, channels, declared.dtype, normalise, declared.size_multiple)
  probe_height, probe_width = fixed_size or probe_sizes(multiple)
  _, inputs = probe_inputs(2, probe_height, probe_width, channels, declared.dtype, normalise, seed=3)
  outputs, _ = run_probe(model, inputs)
  kind = resolve_output(detect_output(model), declared.output, outputs.shape[-1], num_classes, log)
  check_scores(outputs, kind)
  if fixed_size is not None and min(fixed_size) < 32:
    log(f"warning: the pipeline's start-up check probes 32x32 images, larger than this model's {fixed_size}")
  return multiple, stride, kind


def _save_verified(
  adapter: Any,
  input_block: dict[str, Any],
  out_dir: str,
  fixed_size: tuple[int, int] | None,
  multiple: int,
  num_classes: int,
) -> None:
  """OUT/saved_model, reloaded and checked against the in-memory adapter; removed again when it disagrees."""
  module = SegmentationModule(adapter, input_block)
  saved_model_dir = save_module(module, out_dir)
  try:
    verify(saved_model_dir, adapter, input_block, fixed_size, multiple, num_classes)
  except WrapError:
    shutil.rmtree(saved_model_dir)  # an unverified model must not be picked up by the pipeline
    raise


def _architecture(model: Any, kind: str, stride: int, multiple: int, padding: str) -> dict[str, Any]:
  """The card's architecture: the user's model as found by probing, and how the served graph upsamples it."""
  upsampling = "the model's own (full-resolution output)"
  if stride > 1:
    upsampling = f"the model's own, then its logits resized bilinearly x{stride} (output at 1/{stride} of the input)"
  return {
    "variant": model.name,
    "encoder": "wrapped Keras model",
    "parameters": int(model.count_params()),
    "upsampling": upsampling,
    "output": kind,
    "output_stride": stride,
    "size_multiple": multiple,
    "padding": padding,
  }


def _wrapped_from(keras_path: str, custom_objects_module: str | None, unsafe: bool) -> dict[str, Any]:
  """The card's record of the user's file and how it was loaded."""
  return {
    "file": os.path.basename(keras_path),
    "sha256": sha256_of(keras_path),
    "keras_version": keras.__version__,
    "custom_objects_module": custom_objects_module,
    "unsafe_deserialization": bool(unsafe),
  }


def wrap_keras(
  keras_path: str,
  classes_path: str,
  out_dir: str,
  declared: WrapSettings,
  custom_objects_module: str | None = None,
  unsafe: bool = False,
  command: str | None = None,
  log: Callable[[str], object] = print,
) -> dict[str, Any]:
  """Write OUT/saved_model and OUT/card.json around the model in ``keras_path``; returns the card."""
  classes = [c.to_json() for c in classes_module.read_classes_file(classes_path)]
  model = load_keras_model(keras_path, custom_objects_module, unsafe)
  fixed_size, channels = model_input(model)
  multiple, stride, kind = _probe_served_settings(model, fixed_size, channels, declared, len(classes), log)

  normalization, padding = declared.normalization, declared.padding
  adapter = build_adapter(model, normalization, channels, fixed_size, multiple, stride, kind, padding)
  input_block = {
    "dtype": declared.input_dtype,
    "channels": channels,
    "color": color_name(channels),
    "normalization": normalization,
  }
  _save_verified(adapter, input_block, out_dir, fixed_size, multiple, len(classes))
  card: dict[str, Any] = {
    "name": declared.name or os.path.splitext(os.path.basename(keras_path))[0],
    "version": declared.version,
    "format": CARD_FORMAT,
    "architecture": _architecture(model, kind, stride, multiple, padding),
    "stride": multiple,
    "input": input_block,
    "classes": classes,
    "signatures": signatures_block(),
    "wrapped_from": _wrapped_from(keras_path, custom_objects_module, unsafe),
    "command": command,
    "metrics": {},
    "created": created_now(),
  }
  if fixed_size is not None:
    card["input_size"] = list(fixed_size)
  write_card(out_dir, add_ir(out_dir, card, log=log))
  return card
