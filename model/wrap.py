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
import os
import shlex
import shutil
import sys
import time

import keras
import numpy as np

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
from model.export_openvino import add_ir
from model.fcn import normalization_layer
from model.layers import PAD_MODES
from model.wrap_adapter import build_adapter, verify
from model.wrap_probe import (
  WrapError,
  check_scores,
  find_geometry,
  model_input,
  probe_inputs,
  probe_sizes,
  resolve_output,
  run_probe,
)

# This module is the command and wrap(), which writes the model directory; the docstring above is --help. Reading
# and probing the user's model is model.wrap_probe; the served graph and its check are model.wrap_adapter.

OUTPUTS = ("auto", "logits", "softmax", "sigmoid")
# Flags passed to wrap() as the parameter of the same name.
WRAP_FLAGS = ("output", "input_dtype", "size_multiple", "padding", "name", "version", "custom_objects_module")
UNSAFE_HELP = (
  "load with keras safe_mode=False. A Lambda layer can hold arbitrary Python bytecode that runs when the file "
  "is loaded, so whoever wrote the file can run code on your machine: use this only for files you trust. "
  "The written SavedModel does not need it (the graph is traced once here)"
)


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
  except Exception as exc:
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
  _, inputs = probe_inputs(2, probe_height, probe_width, channels, np.dtype(input_dtype), normalise, seed=3)
  outputs, _ = run_probe(model, inputs)
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
  write_card(out_dir, add_ir(out_dir, card, log=log))
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
      unsafe=args.unsafe_deserialization,
      command="python -m model.wrap " + shlex.join(argv),
      log=log,
      **{name: getattr(args, name) for name in WRAP_FLAGS},
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
