"""Wrap a trained Keras 3 segmentation model you already have as this project's exported model directory.

    python -m model.wrap --keras my_model.keras --classes classes.json --out models/theirs

Writes OUT/saved_model/ and OUT/card.json with the contract of
docs/CONTRACTS.md, so ``./run_pipeline.sh --model OUT`` segments with it. The
served graph is an adapter around your model: normalise the pixels (what you
declare; by default the model gets float pixel values), pad to the size
multiple the model needs (found by probing) or to its fixed input size, your
model, its output turned back into logits (--output), bilinear resize of the
logits to the padded size when the model predicts at a coarser stride, crop,
softmax and argmax. The model is probed before anything is written, and the
written SavedModel is reloaded and checked against the in-memory adapter.
The artifact loads with TensorFlow alone: neither your custom-layer module
nor Python bytecode from Lambda layers is needed at inference time.
"""

import argparse
import hashlib
import importlib
import json
import math
import os
import shlex
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from model import classes as classes_module
from model.export import (
  CARD_FORMAT,
  INPUT_DTYPES,
  SegmentationModule,
  color_name,
  created_now,
  save_module,
  signatures_block,
  write_card,
)
from model.fcn import normalization_layer
from model.layers import PAD_MODES, CropToReference, PadToMultiple, PadToSize, ResizeUpsample, ScoresToLogits

OUTPUTS = ("auto", "logits", "softmax", "sigmoid")
SIZE_MULTIPLES = (1, 2, 4, 8, 16, 32, 64, 128)
PROBE_MIN_SIZE = 40  # probes smaller than this would fail deep models for the wrong reason
UNSAFE_HELP = (
  "load with keras safe_mode=False. A Lambda layer can hold arbitrary Python bytecode that runs when the file "
  "is loaded, so whoever wrote the file can run code on your machine: use this only for files you trust. "
  "The written SavedModel does not need it (the graph is traced once here)"
)


class WrapError(ValueError):
  """A model or flag combination that cannot be wrapped; the message says how to fix it."""


def sha256_of(path):
  digest = hashlib.sha256()
  with open(path, "rb") as handle:
    for block in iter(lambda: handle.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


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
  except Exception as exc:  # pylint: disable=broad-except
    message = " ".join(str(exc).split())
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


def read_normalization(path):
  """A normalisation block from a JSON file: the block itself, {"normalization": ...}, or a card's input."""
  try:
    with open(path) as handle:
      data = json.load(handle)
  except (OSError, json.JSONDecodeError) as exc:
    raise WrapError(f"--normalization {path} cannot be read as JSON ({exc})") from None
  if isinstance(data, dict) and isinstance(data.get("input"), dict):
    data = data["input"].get("normalization")
  elif isinstance(data, dict) and "normalization" in data:
    data = data["normalization"]
  if isinstance(data, dict) and set(data) >= {"mean", "std"}:
    return {"mean": [float(v) for v in data["mean"]], "std": [float(v) for v in data["std"]]}
  if isinstance(data, dict) and set(data) >= {"scale", "offset"}:
    return {"scale": float(data["scale"]), "offset": float(data["offset"])}
  raise WrapError(
    f'--normalization {path} must hold {{"mean": [...], "std": [...]}} (one per band) or '
    '{"scale": S, "offset": O}, as in a card\'s input.normalization'
  )


def detect_output(model):
  """'softmax' or 'sigmoid' when the model's last layer applies one, else 'logits'."""
  layer = model.outputs[0]._keras_history.operation  # pylint: disable=protected-access
  if isinstance(layer, keras.layers.Softmax):
    return "softmax"
  name = getattr(getattr(layer, "activation", None), "__name__", "")
  return name if name in ("softmax", "sigmoid") else "logits"


def model_input(model):
  """(fixed (H, W) or None, channels) from the model's single image input."""
  if len(model.inputs) != 1 or len(model.outputs) != 1:
    raise WrapError(
      f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
      "wrap a model with one image input and one per-pixel score output"
    )
  shape = tuple(model.inputs[0].shape)
  if len(shape) != 4 or shape[-1] is None:
    raise WrapError(
      f"the model's input shape is {shape}; expected (batch, height, width, channels) with known channels"
    )
  height, width = shape[1], shape[2]
  if (height is None) != (width is None):
    raise WrapError(
      f"the model's input shape {shape} fixes one side only; rebuild it with both sides fixed or both None"
    )
  return (None if height is None else (int(height), int(width))), int(shape[-1])


def _odd_at_least(value):
  value = max(1, math.ceil(value))
  return value if value % 2 else value + 1


def probe_sizes(multiple):
  """Two sizes that are odd multiples of ``multiple``: they pass only if that multiple suffices."""
  factor = _odd_at_least(PROBE_MIN_SIZE / multiple)
  return multiple * factor, multiple * (factor + 2)


def _probe_inputs(batch, height, width, channels, dtype, normalise, seed=0):
  top = np.iinfo(dtype).max
  images = np.random.default_rng(seed).integers(0, top + 1, size=(batch, height, width, channels), dtype=dtype)
  return images, keras.ops.convert_to_numpy(normalise(images.astype(np.float32)))


def _run_probe(model, inputs):
  """Output array and its stride for one probe; raises WrapError describing why the output does not fit."""
  outputs = model(inputs, training=False)
  if isinstance(outputs, (list, tuple, dict)):
    raise WrapError("the model returns several outputs; wrap a model with one per-pixel score output")
  outputs = keras.ops.convert_to_numpy(outputs)
  height, width = inputs.shape[1:3]
  if outputs.ndim != 4 or outputs.shape[0] != inputs.shape[0]:
    raise WrapError(
      f"the model returns shape {outputs.shape} for input {inputs.shape}; expected [N, H/s, W/s, classes]"
    )
  out_height, out_width = outputs.shape[1:3]
  if out_height < 1 or height % out_height or width % out_width or height // out_height != width // out_width:
    raise WrapError(
      f"the model returns {out_height}x{out_width} for a {height}x{width} input; the output must be the input "
      "size divided by one integer stride ('same'-padded convolutions)"
    )
  return outputs, height // out_height


def find_geometry(model, fixed_size, channels, dtype, normalise, size_multiple=None):
  """(size multiple, output stride): the smallest multiple at which the model runs, checked by probing."""
  if fixed_size is not None:
    _, inputs = _probe_inputs(1, *fixed_size, channels, dtype, normalise)
    try:
      return 1, _run_probe(model, inputs)[1]
    except WrapError:
      raise
    except Exception as exc:  # pylint: disable=broad-except
      raise WrapError(f"the model fails on its own fixed input size {fixed_size}: {_short(exc)}") from None
  candidates = (size_multiple,) if size_multiple else SIZE_MULTIPLES
  reasons = []
  for multiple in candidates:
    height, width = probe_sizes(multiple)
    _, inputs = _probe_inputs(1, height, width, channels, dtype, normalise)
    try:
      _, stride = _run_probe(model, inputs)
      _, inputs = _probe_inputs(1, width, height, channels, dtype, normalise, seed=1)
      if _run_probe(model, inputs)[1] != stride:
        raise WrapError("the output stride depends on the input size")
      return multiple, stride
    except Exception as exc:  # pylint: disable=broad-except
      reasons.append(f"{height}x{width}: {_short(exc)}")
  if size_multiple:
    raise WrapError(f"the model does not run at multiples of --size_multiple {size_multiple} ({reasons[0]})")
  raise WrapError(
    f"the model ran at no size that is a multiple of {SIZE_MULTIPLES[-1]} or less (last: {reasons[-1]}); "
    "pass --size_multiple N if it needs another one"
  )


def _short(exc):
  return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


def resolve_output(model, requested, channels, num_classes, log=print):
  """The ScoresToLogits kind for the model's output, after checking channels against the class list."""
  detected = detect_output(model)
  kind = detected if requested == "auto" else requested
  if requested not in ("auto", detected) and detected != "logits":
    log(f"warning: the model's last layer applies {detected} but --output {requested} was given; using {requested}")
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


def check_scores(outputs, kind):
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


def build_adapter(model, normalization, channels, fixed_size, multiple, stride, kind, padding):
  """normalise -> pad -> the user's model -> logits -> resize to the padded size -> crop, as one Keras model."""
  images = keras.Input(shape=(None, None, channels), name="images")
  normalised = normalization_layer(normalization, channels)(images)
  if fixed_size is not None:
    padded = PadToSize(*fixed_size, mode=padding, name="pad_to_input_size")(normalised)
  else:
    padded = PadToMultiple(multiple, mode=padding, name="pad_to_multiple")(normalised)
  logits = ScoresToLogits(kind, name="to_logits")(model(padded))
  if stride > 1:
    logits = ResizeUpsample(stride, name="resize_logits")(logits)
  logits = CropToReference(name="crop_to_input")([logits, images])
  logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
  return keras.Model(images, logits, name=f"wrapped_{model.name}")


def verify(saved_model_dir, adapter, input_block, fixed_size, multiple, num_classes):
  """Reload the SavedModel with TensorFlow alone and compare it with the in-memory adapter on a probe."""
  loaded = tf.saved_model.load(saved_model_dir)
  if int(loaded.num_classes.numpy()) != num_classes:
    raise WrapError(f"the written model reports {int(loaded.num_classes.numpy())} classes, expected {num_classes}")
  if fixed_size is not None:
    height, width = max(1, fixed_size[0] - 3), max(1, fixed_size[1] - 5)
  else:
    height, width = 3 * multiple + 5, 2 * multiple + 3  # off the multiple, so padding and cropping run
  dtype = np.dtype(input_block["dtype"])
  images, _ = _probe_inputs(2, height, width, input_block["channels"], dtype, lambda x: x, seed=2)
  served = loaded.segment(images)
  logits = keras.ops.convert_to_numpy(adapter(images.astype(np.float32), training=False)).astype(np.float64)
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  ordered = np.sort(probabilities, axis=-1)
  decided = (ordered[..., -1] - ordered[..., -2]) > 1e-4  # near-ties may round either way
  class_ids = served["class_ids"].numpy()
  if class_ids.shape != images.shape[:3] or served["confidence"].shape != images.shape[:3]:
    raise WrapError(f"the written model returns shape {class_ids.shape} for input {images.shape}")
  if np.any(class_ids[decided] != probabilities.argmax(-1)[decided]):
    raise WrapError("the written SavedModel disagrees with the in-memory model on a probe batch")
  if not np.allclose(served["confidence"].numpy(), probabilities.max(-1), atol=1e-4):
    raise WrapError("the written SavedModel's confidence disagrees with the in-memory model on a probe batch")
  empty = loaded.segment(np.zeros((0, height, width, input_block["channels"]), dtype))
  if tuple(empty["class_ids"].shape) != (0, height, width):
    raise WrapError(f"the written model returns {tuple(empty['class_ids'].shape)} for an empty batch")


def wrap(
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
  if input_dtype not in INPUT_DTYPES:
    raise WrapError(f"--input_dtype {input_dtype} is not one of {INPUT_DTYPES}")
  if padding not in PAD_MODES:
    raise WrapError(f"--padding {padding} is not one of {PAD_MODES}")
  if size_multiple is not None and size_multiple < 1:
    raise WrapError(f"--size_multiple {size_multiple} must be a positive integer")
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
  _, inputs = _probe_inputs(2, probe_height, probe_width, channels, np.dtype(input_dtype), normalise, seed=3)
  outputs, _ = _run_probe(model, inputs)
  kind = resolve_output(model, output, outputs.shape[-1], len(classes), log)
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
  write_card(out_dir, card)
  return card


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--keras", required=True, help="the trained model, saved with model.save('...keras') (Keras 3)")
  parser.add_argument(
    "--classes", required=True, help='classes.json: [{"id": 0, "name": "background"}, ...], one per output class'
  )
  parser.add_argument("--out", required=True, help="model directory to write (saved_model/ + card.json)")
  scale = parser.add_argument_group("normalisation the model expects (default: float pixel values, x*1+0)")
  scale.add_argument(
    "--input_scale", type=float, default=None, help="the model gets x*S+O (e.g. 0.00392156862745098 for x/255)"
  )
  scale.add_argument("--input_offset", type=float, default=None, help="O of x*S+O (default 0)")
  scale.add_argument(
    "--normalization", default=None, help='JSON file with per-band {"mean": [...], "std": [...]} or {"scale", "offset"}'
  )
  parser.add_argument(
    "--input_dtype", choices=INPUT_DTYPES, default="uint8", help="pixel type the pipeline feeds (default uint8)"
  )
  parser.add_argument(
    "--output",
    choices=OUTPUTS,
    default="auto",
    help="what the model's last layer returns: logits, softmax probabilities, or one sigmoid probability "
    "channel (two classes: background and the class); auto reads the last layer's activation",
  )
  parser.add_argument(
    "--size_multiple",
    type=int,
    default=None,
    help="input sizes the model needs are multiples of N (default: found by probing)",
  )
  parser.add_argument(
    "--padding",
    choices=PAD_MODES,
    default="symmetric",
    help="how inputs are padded up to that size (default symmetric, i.e. reflect)",
  )
  parser.add_argument("--name", default=None, help="model name in the card (default: the file name)")
  parser.add_argument("--version", default="1.0.0")
  parser.add_argument(
    "--custom_objects_module",
    default=None,
    help="module to import first, so its @keras.saving.register_keras_serializable layers are known",
  )
  parser.add_argument("--unsafe_deserialization", action="store_true", help=UNSAFE_HELP)
  args = parser.parse_args(argv)
  if args.normalization and (args.input_scale is not None or args.input_offset is not None):
    parser.error("give either --normalization or --input_scale/--input_offset, not both")
  return args


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  started = time.monotonic()
  log = lambda message: print(message, file=sys.stderr)  # noqa: E731
  try:
    if args.normalization:
      normalization = read_normalization(args.normalization)
    else:
      scale = 1.0 if args.input_scale is None else args.input_scale
      normalization = {"scale": scale, "offset": 0.0 if args.input_offset is None else args.input_offset}
    card = wrap(
      args.keras,
      args.classes,
      args.out,
      normalization=normalization,
      output=args.output,
      input_dtype=args.input_dtype,
      size_multiple=args.size_multiple,
      padding=args.padding,
      name=args.name,
      version=args.version,
      custom_objects_module=args.custom_objects_module,
      unsafe=args.unsafe_deserialization,
      command="python -m model.wrap " + shlex.join(argv),
      log=log,
    )
  except (WrapError, classes_module.ClassesError) as exc:
    print(f"model.wrap: error: {exc}", file=sys.stderr)
    sys.exit(2)
  if "input_size" in card:
    size = min(card["input_size"])
    log(f"fixed input size {card['input_size']}: the pipeline tiles every image at {size} (card input_size)")
  print(
    json.dumps(
      {
        "out": args.out,
        "stride": card["stride"],
        "output": card["architecture"]["output"],
        "output_stride": card["architecture"]["output_stride"],
        "seconds": round(time.monotonic() - started, 1),
      }
    )
  )


if __name__ == "__main__":
  main()
