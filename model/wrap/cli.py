"""Wrap a trained segmentation model you already have (Keras 3, or ONNX from PyTorch) as this project's model directory.

    python -m model.wrap --keras my_model.keras --classes classes.json --out models/theirs
    python -m model.wrap --onnx my_unet.onnx --classes classes.json --out models/theirs --normalization imagenet

Writes a model directory with the contract of docs/CONTRACTS.md, so
``./run_pipeline.sh --model OUT`` segments with it. The served graph is an
adapter around your model: normalise the pixels (what you declare; by
default the model gets float pixel values), pad to the size multiple the
model needs (found by probing) or to its fixed input size, your model, its
output turned back into logits (--output), bilinear resize of the logits to
the padded size when the model predicts at a coarser stride, crop, softmax
and argmax. The model is probed before anything is written, and what is
written is reloaded and checked against your model.

--keras: OUT/saved_model/ (loads with TensorFlow alone: neither your
custom-layer module nor Python bytecode from Lambda layers is needed at
inference time) and its OpenVINO IR in OUT/openvino/.

--onnx: OUT/onnx/source.onnx (your file), OUT/onnx/model.onnx (the served
graph, plain ONNX: onnxruntime and onnxruntime-gpu run it) and its OpenVINO
IR in OUT/openvino/ (the CPU engine). The layout (NCHW as PyTorch exports,
or NHWC) is read from the graph; dynamic height and width are used when
the model has them, else the pipeline tiles at its fixed size. Imports
neither TensorFlow nor PyTorch.
"""

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from model.data import classes as classes_module
from model.text import one_line
from model.wrap.common import (
  IMAGENET_MEAN,
  IMAGENET_STD,
  INPUT_DTYPES,
  LAYOUTS,
  PAD_MODES,
  WrapError,
  WrapSettings,
  read_normalization,
  sha256_of,
)

__all__ = ["WrapError", "WrapSettings", "main", "parse_args", "read_normalization", "sha256_of", "wrap"]

OUTPUTS = ("auto", "logits", "softmax", "sigmoid")
# Flags that fill the WrapSettings field of the same name (with the normalisation the flags declare).
WRAP_FLAGS = ("output", "input_dtype", "size_multiple", "padding", "name", "version")
UNSAFE_HELP = (
  "load with keras safe_mode=False. A Lambda layer can hold arbitrary Python bytecode that runs when the file "
  "is loaded, so whoever wrote the file can run code on your machine: use this only for files you trust. "
  "The written SavedModel does not need it (the graph is traced once here)"
)
NORMALIZATION_HELP = (
  'a JSON file with per-band {"mean": [...], "std": [...]} or {"scale", "offset"} in pixel units, or the '
  "preset 'imagenet': what torchvision models expect, pixels scaled to 0-1 by the input dtype's maximum (255 "
  f"for uint8), then (x - mean) / std per band with mean {IMAGENET_MEAN} and std {IMAGENET_STD} (RGB); the "
  "card records it as mean/std in pixel units (mean 123.675, 116.28, 103.53 and std 58.395, 57.12, 57.375 "
  "for uint8)"
)


def wrap(keras_path: str, classes_path: str, out_dir: str, declared: WrapSettings, **kwargs: Any) -> dict[str, Any]:
  """The Keras wrap (``model.wrap.keras``), imported only when used: it loads TensorFlow."""
  from model.wrap.keras import wrap_keras

  return wrap_keras(keras_path, classes_path, out_dir, declared, **kwargs)


class _OneLineParser(argparse.ArgumentParser):
  """Usage errors as one line and exit 2, like every other refusal of the command."""

  def error(self, message: str) -> NoReturn:
    self.exit(2, f"model.wrap: error: {message} (see --help)\n")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
  """The model file (--keras or --onnx), its class list and the directory to write."""
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--keras", help="the trained model, saved with model.save('...keras') (Keras 3)")
  source.add_argument("--onnx", help="an ONNX model, e.g. written by torch.onnx.export (opset 13 or later preferred)")
  parser.add_argument(
    "--classes", required=True, help='classes.json: [{"id": 0, "name": "background"}, ...], one per output class'
  )
  parser.add_argument("--out", required=True, help="model directory to write")


def _add_normalisation_arguments(parser: argparse.ArgumentParser) -> None:
  """How pixels are normalised before the model: x*S+O, a JSON file or the imagenet preset (their own help group)."""
  scale = parser.add_argument_group("normalisation the model expects (default: float pixel values, x*1+0)")
  scale.add_argument(
    "--input_scale", type=float, default=None, help="the model gets x*S+O (e.g. 0.00392156862745098 for x/255)"
  )
  scale.add_argument("--input_offset", type=float, default=None, help="O of x*S+O (default 0)")
  scale.add_argument("--normalization", default=None, metavar="FILE|imagenet", help=NORMALIZATION_HELP)


def _add_served_graph_arguments(parser: argparse.ArgumentParser) -> None:
  """What the served graph feeds the model and reads back: pixel type, layout, output kind, size multiple, padding."""
  parser.add_argument(
    "--input_dtype", choices=INPUT_DTYPES, default="uint8", help="pixel type the pipeline feeds (default uint8)"
  )
  parser.add_argument(
    "--layout",
    choices=LAYOUTS,
    default="auto",
    help="--onnx only: the model's input and output layout; auto (default) reads it from the input shape "
    "(the axis with a small fixed size is the channel axis)",
  )
  parser.add_argument(
    "--output",
    choices=OUTPUTS,
    default="auto",
    help="what the model's last layer returns: logits, softmax probabilities, or one sigmoid probability "
    "channel (two classes: background and the class); auto reads the last layer's activation (Keras) or the "
    "last node (ONNX: Softmax, Sigmoid, else logits)",
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


def _add_keras_loading_arguments(parser: argparse.ArgumentParser) -> None:
  """--keras only: the module of custom layers to import first, and loading without safe mode."""
  parser.add_argument(
    "--custom_objects_module",
    default=None,
    help="--keras only: module to import first, so its @keras.saving.register_keras_serializable layers are known",
  )
  parser.add_argument("--unsafe_deserialization", action="store_true", help="--keras only: " + UNSAFE_HELP)


def _refuse_mixed_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Usage errors for flags that contradict each other or do not apply to the model's format."""
  if args.normalization and (args.input_scale is not None or args.input_offset is not None):
    parser.error("give either --normalization or --input_scale/--input_offset, not both")
  if args.onnx and (args.custom_objects_module or args.unsafe_deserialization):
    parser.error("--custom_objects_module and --unsafe_deserialization apply to --keras models only")
  if args.keras and args.layout != "auto":
    parser.error("--layout applies to --onnx models only (Keras models are NHWC)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = _OneLineParser(
    prog="python -m model.wrap", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  _add_model_arguments(parser)
  _add_normalisation_arguments(parser)
  _add_served_graph_arguments(parser)
  parser.add_argument("--name", default=None, help="model name in the card (default: the file name)")
  parser.add_argument("--version", default="1.0.0")
  _add_keras_loading_arguments(parser)
  args = parser.parse_args(argv)
  _refuse_mixed_flags(parser, args)
  return args


def normalization_of(args: argparse.Namespace) -> dict[str, Any]:
  """The normalisation the flags declare: --normalization's file or preset, else x*S+O."""
  if args.normalization:
    return read_normalization(args.normalization, args.input_dtype)
  scale = 1.0 if args.input_scale is None else args.input_scale
  return {"scale": scale, "offset": 0.0 if args.input_offset is None else args.input_offset}


def main(argv: Sequence[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  started = time.monotonic()
  log = lambda message: print(message, file=sys.stderr)  # noqa: E731
  command = "python -m model.wrap " + shlex.join(argv)
  try:
    declared = WrapSettings(normalization_of(args), **{flag: getattr(args, flag) for flag in WRAP_FLAGS})
    if args.onnx:
      from model.wrap.onnx import wrap_onnx

      card = wrap_onnx(args.onnx, args.classes, args.out, declared, layout=args.layout, command=command, log=log)
    else:
      card = wrap(
        args.keras,
        args.classes,
        args.out,
        declared,
        custom_objects_module=args.custom_objects_module,
        unsafe=args.unsafe_deserialization,
        command=command,
        log=log,
      )
  except (WrapError, classes_module.ClassesError) as exc:
    print(f"model.wrap: error: {one_line(exc)}", file=sys.stderr)
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
