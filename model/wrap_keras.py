"""model.wrap --keras: a user's Keras 3 model as this project's exported model directory (SavedModel + IR).

The served graph is an adapter around the model (``model.wrap_adapter``),
traced once into a SavedModel that loads with TensorFlow alone; the model
is probed first (``model.wrap_probe``) and the written SavedModel reloaded
and checked against the in-memory adapter.
"""

import importlib
import os
import shutil

import keras
import numpy as np

from model import classes as classes_module
from model.card import CARD_FORMAT, color_name, created_now
from model.export import SegmentationModule, save_module, signatures_block, write_card
from model.export_openvino import add_ir
from model.fcn import normalization_layer
from model.text import one_line
from model.wrap_adapter import build_adapter, verify
from model.wrap_common import WrapError, check_scores, check_wrap_arguments, probe_sizes, resolve_output, sha256_of
from model.wrap_probe import detect_output, find_geometry, model_input, probe_inputs, run_probe


def load_keras_model(path, custom_objects_module=None, unsafe=False):
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


def wrap_keras(
  keras_path,
  classes_path,
  out_dir,
  normalization=None,
  output="auto",
  input_dtype="uint8",
  size_multiple=None,
  padding="symmetric",
  name=None,
  version="1.0.0",
  custom_objects_module=None,
  unsafe=False,
  command=None,
  log=print,
):
  """Write OUT/saved_model and OUT/card.json around the model in ``keras_path``; returns the card."""
  check_wrap_arguments(input_dtype, padding, size_multiple)
  classes = [c.to_json() for c in classes_module.read_classes_file(classes_path)]
  model = load_keras_model(keras_path, custom_objects_module, unsafe)
  fixed_size, channels = model_input(model)
  normalization = normalization or {"scale": 1.0, "offset": 0.0}
  try:
    normalise = normalization_layer(normalization, channels)
  except ValueError as exc:
    raise WrapError(f"the normalisation does not fit the model's {channels}-band input: {exc}") from None
  multiple, stride = find_geometry(model, fixed_size, channels, np.dtype(input_dtype), normalise, size_multiple)
  probe_height, probe_width = fixed_size or probe_sizes(multiple)
  _, inputs = probe_inputs(2, probe_height, probe_width, channels, np.dtype(input_dtype), normalise, seed=3)
  outputs, _ = run_probe(model, inputs)
  kind = resolve_output(detect_output(model), output, outputs.shape[-1], len(classes), log)
  check_scores(outputs, kind)
  if fixed_size is not None and min(fixed_size) < 32:
    log(f"warning: the pipeline's start-up check probes 32x32 images, larger than this model's {fixed_size}")

  adapter = build_adapter(model, normalization, channels, fixed_size, multiple, stride, kind, padding)
  input_block = {
    "dtype": input_dtype,
    "channels": channels,
    "color": color_name(channels),
    "normalization": normalization,
  }
  module = SegmentationModule(adapter, input_block)
  saved_model_dir = save_module(module, out_dir)
  try:
    verify(saved_model_dir, adapter, input_block, fixed_size, multiple, len(classes))
  except WrapError:
    shutil.rmtree(saved_model_dir)  # an unverified model must not be picked up by the pipeline
    raise

  upsampling = "the model's own (full-resolution output)"
  if stride > 1:
    upsampling = f"the model's own, then its logits resized bilinearly x{stride} (output at 1/{stride} of the input)"
  card = {
    "name": name or os.path.splitext(os.path.basename(keras_path))[0],
    "version": version,
    "format": CARD_FORMAT,
    "architecture": {
      "variant": model.name,
      "encoder": "wrapped Keras model",
      "parameters": int(model.count_params()),
      "upsampling": upsampling,
      "output": kind,
      "output_stride": stride,
      "size_multiple": multiple,
      "padding": padding,
    },
    "stride": multiple,
    "input": input_block,
    "classes": classes,
    "signatures": signatures_block(),
    "wrapped_from": {
      "file": os.path.basename(keras_path),
      "sha256": sha256_of(keras_path),
      "keras_version": keras.__version__,
      "custom_objects_module": custom_objects_module,
      "unsafe_deserialization": bool(unsafe),
    },
    "command": command,
    "metrics": {},
    "created": created_now(),
  }
  if fixed_size is not None:
    card["input_size"] = list(fixed_size)
  write_card(out_dir, add_ir(out_dir, card, log=log))
  return card
