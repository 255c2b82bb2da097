"""Post-training int8 quantisation of an exported model's OpenVINO IR, behind an accuracy gate.

    python -m model.quantize --model DIR --data DATA --split train --truth_data TEST --truth_split test
    python -m model.quantize --model DIR --calibration 'images/*.png' [--subset 300]
    python -m model.quantize --model DIR     # calibrates on the training data the card names, if it is here

NNCF calibrates the activation ranges of the fp32 IR on a few hundred
images (``--calibration GLOB`` of image files, or ``--data DATA --split S``
in ``model.make_dataset``'s layout; without either, the ``--data`` of the
card's training command when that directory exists). The IR keeps dynamic
height and width, so calibration images of any size are used as they are.

int8 is written only if it gives the same masks: before anything is
written, class ids of OpenVINO int8 are compared with TensorFlow fp32 on
held-out images (``--truth_data``; their masks also give the mean IoU of
both), or, without truth data, on the calibration images themselves, which
the output says. The gate is agreement >= ``--agreement_min`` (99.5 %) and a
mean IoU drop <= ``--miou_drop_max`` (0.005). A failed gate prints the
numbers and exits 1 with nothing written; ``--force`` writes anyway and
records the failure. A passing model goes to MODEL_DIR/openvino/model_int8.xml
(+ .bin), with the measurements, its speed against fp32 on this CPU and the
command in the card's ``openvino.int8`` block; ``--precision int8`` in the
pipeline then runs it.
"""

import argparse
import contextlib
import glob
import json
import logging
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from model.artifact.quantize_gate import failure_block, format_table, judge
from model.engines import card_input, cpu, openvino_ir
from model.engines.choice import EngineChoice
from model.json_file import write_json_file

AGREEMENT_MIN = 0.995
MIOU_DROP_MAX = 0.005
DEFAULT_SUBSET = 300
NOT_FOUND_HINT = (
  "pass --calibration 'GLOB' (image files) or --data DATA --split train (a model.make_dataset layout) "
  "with a few hundred images like the ones the model will segment"
)


class QuantizeError(ValueError):
  """Quantisation cannot start; the message says what to pass instead."""


def read_card(model_dir: str) -> dict[str, Any]:
  path = os.path.join(model_dir, "card.json")
  try:
    with open(path, encoding="utf-8") as handle:
      return json.load(handle)
  except OSError:
    raise QuantizeError(f"{model_dir} is not an exported model directory: it has no card.json") from None
  except ValueError as exc:
    raise QuantizeError(f"{path} is not valid JSON: {exc}") from None


def training_data_dir(card: dict[str, Any]) -> str | None:
  """The ``--data`` of the card's training command, or None: where the model says it learned from."""
  command = (card.get("training") or {}).get("command") or ""
  try:
    words = shlex.split(command)
  except ValueError:
    return None
  for index, word in enumerate(words):
    if word == "--data" and index + 1 < len(words):
      return words[index + 1]
    if word.startswith("--data="):
      return word.split("=", 1)[1]
  return None


def calibration_source(args: argparse.Namespace, card: dict[str, Any]) -> tuple[str, ...]:
  """("glob", pattern) or ("data", directory, split), decided before anything heavy is imported."""
  if args.calibration and args.data:
    raise QuantizeError("pass either --calibration or --data, not both")
  if args.calibration:
    return ("glob", args.calibration)
  if args.data:
    return ("data", args.data, args.split)
  named = training_data_dir(card)
  if named is None:
    raise QuantizeError(f"no calibration images: the card of {args.model} names no training data; {NOT_FOUND_HINT}")
  if not os.path.isdir(os.path.join(named, args.split)):
    raise QuantizeError(
      f"no calibration images: the card's training data {named} has no '{args.split}' split here; {NOT_FOUND_HINT}"
    )
  return ("data", named, args.split)


def describe_source(source: tuple[str, ...]) -> str:
  return f"files {source[1]}" if source[0] == "glob" else f"{source[1]} split {source[2]}"


def glob_images(pattern: str, spec: Any, limit: int) -> list[np.ndarray]:
  """The first ``limit`` files of ``pattern`` (sorted) as [H, W, C] arrays of the model's dtype and bands."""
  from model.data.image_io import read_image

  paths = sorted(path for path in glob.glob(pattern, recursive=True) if os.path.isfile(path))
  if not paths:
    raise QuantizeError(f"--calibration {pattern!r} matches no files; {NOT_FOUND_HINT}")
  images = []
  for path in paths[:limit]:
    image = read_image(path)
    check_image(image, spec, path)
    images.append(image)
  return images


def check_image(image: np.ndarray, spec: Any, name: str) -> None:
  if image.shape[2] != spec.channels or image.dtype != np.dtype(spec.dtype):
    raise QuantizeError(
      f"{name} is {image.shape[2]}-channel {image.dtype}, but the model takes {spec.channels}-channel {spec.dtype}"
    )


def split_examples(
  data_dir: str, split: str, spec: Any, limit: int | None = None
) -> list[tuple[np.ndarray, np.ndarray | None]]:
  """(image [H, W, C], mask [H, W]) pairs of a dataset split, in file order (``model.data``'s reader)."""
  from model.data.data import load_split

  try:
    dataset, _ = load_split(data_dir, split, channels=spec.channels, dtype=spec.dtype)
  except ValueError as exc:  # no such split: the message names what was expected
    raise QuantizeError(str(exc)) from None
  if limit is not None:
    dataset = dataset.take(limit)
  return [(image.numpy(), mask.numpy()) for image, mask in dataset]


def calibration_images(source: tuple[str, ...], spec: Any, limit: int) -> list[np.ndarray]:
  if source[0] == "glob":
    return glob_images(source[1], spec, limit)
  return [image for image, _mask in split_examples(source[1], source[2], spec, limit)]


def quantize_ir(fp32_ir: str, images: Sequence[np.ndarray]) -> Any:
  """NNCF's default post-training int8 quantisation of the IR, calibrated on ``images`` ([H, W, C] each)."""
  import nncf
  import openvino

  nncf.set_log_level(logging.WARNING)
  model = openvino.Core().read_model(fp32_ir)
  dataset = nncf.Dataset([image[None] for image in images])
  # NNCF draws its progress bars on stdout, which carries this command's JSON.
  with contextlib.redirect_stdout(sys.stderr):
    return nncf.quantize(model, dataset, subset_size=len(images))


def images_per_second(segmenters: dict[str, Any], image: np.ndarray, seconds: float) -> dict[str, float]:
  """Batch-1 throughput of each segmenter's ``predict`` on ``image``, {name: images/s}.

  Each is warmed up once (that call compiles), then they take turns in
  rounds of about a tenth of ``seconds`` until each has run ``seconds``: on
  a machine shared with other jobs, a load change then hits both alike.
  """
  batch = image[None]
  counts: dict[str, int] = {}
  spent: dict[str, float] = {}
  for name, segmenter in segmenters.items():
    segmenter.predict(batch)
    counts[name], spent[name] = 0, 0.0
  while any(spent[name] < seconds or counts[name] < 3 for name in segmenters):
    for name, segmenter in segmenters.items():
      started = time.perf_counter()
      while True:
        segmenter.predict(batch)
        counts[name] += 1
        if time.perf_counter() - started >= seconds / 10:
          break
      spent[name] += time.perf_counter() - started
  return {name: round(counts[name] / spent[name], 2) for name in segmenters}


def speed_image(image: np.ndarray, size: int) -> np.ndarray:
  """``image`` tiled to size x size: real content at the size the speed is reported for."""
  height, width = image.shape[:2]
  return np.ascontiguousarray(np.tile(image, (math.ceil(size / height), math.ceil(size / width), 1))[:size, :size])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, help="exported model directory (saved_model/ + card.json)")
  parser.add_argument("--calibration", default=None, help="glob of calibration image files (quote it)")
  parser.add_argument("--data", default=None, help="calibration dataset in model.make_dataset's layout")
  parser.add_argument("--split", default="train", help="split of --data (or of the card's training data)")
  parser.add_argument("--subset", type=int, default=DEFAULT_SUBSET, help="calibration images (the first N)")
  parser.add_argument("--truth_data", default=None, help="held-out dataset with masks for the gate")
  parser.add_argument("--truth_split", default="test")
  parser.add_argument("--agreement_min", type=float, default=AGREEMENT_MIN, help="least class-id agreement")
  parser.add_argument("--miou_drop_max", type=float, default=MIOU_DROP_MAX, help="largest mean IoU drop")
  parser.add_argument("--force", action="store_true", help="write the int8 IR even if the gate fails")
  parser.add_argument("--speed_seconds", type=float, default=3.0, help="per precision; 0 skips the speed test")
  parser.add_argument("--speed_size", type=int, default=512, help="height and width of the speed test's image")
  args = parser.parse_args(argv)
  if args.subset < 1:
    parser.error("--subset must be at least 1")
  if args.agreement_min < 0 or args.miou_drop_max < 0 or args.speed_seconds < 0 or args.speed_size < 1:
    parser.error("--agreement_min, --miou_drop_max and --speed_seconds must be >= 0, --speed_size >= 1")
  return args


def _refuse_calibration_as_truth(args: argparse.Namespace, source: tuple[str, ...]) -> None:
  """The gate needs images the calibration did not see: the calibration split cannot be the truth split."""
  if args.truth_data and source[0] == "data":
    same_data = os.path.abspath(args.truth_data) == os.path.abspath(source[1])
    if same_data and args.truth_split == source[2]:
      raise QuantizeError("--truth_data/--truth_split is the calibration split itself; pass a held-out split")


def _evaluation_examples(
  args: argparse.Namespace, images: list[np.ndarray], spec: Any
) -> tuple[list[tuple[np.ndarray, np.ndarray | None]], str]:
  """(image, truth mask or None) pairs the gate measures on, and how the output names them."""
  if args.truth_data:
    examples = split_examples(args.truth_data, args.truth_split, spec)
    return examples, f"held-out images of {args.truth_data} split {args.truth_split}"
  what = "calibration images (not held out: pass --truth_data for held-out images and mean IoU)"
  return [(image, None) for image in images], what


def _measure(
  model_dir: str, staging: str, spec: Any, examples: list[tuple[np.ndarray, np.ndarray | None]], card: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
  """({"openvino fp32", "openvino int8"} segmenters, their agreement and mean IoU against TensorFlow fp32)."""
  from model import engines
  from model.engines.agreement import compare_segmenters

  reference = engines.load(model_dir, EngineChoice("tensorflow", "fp32"), spec)
  runs = {
    "openvino fp32": engines.load(model_dir, EngineChoice("openvino", "fp32"), spec),
    "openvino int8": engines.load(staging, EngineChoice("openvino", "int8"), spec),
  }
  measured = compare_segmenters(reference, runs, examples, len(card.get("classes") or []) or None)
  return runs, measured


def _int8_block(
  args: argparse.Namespace,
  argv: Sequence[str],
  source: tuple[str, ...],
  calibration_count: int,
  what: str,
  measured: dict[str, Any],
  gate: dict[str, Any],
) -> dict[str, Any]:
  """The card's ``openvino.int8`` block: the IR, its calibration, where it was measured, the gate and the numbers."""
  block: dict[str, Any] = {
    "ir": f"{openvino_ir.IR_FOLDER}/{openvino_ir.INT8_FILE}",
    "source_saved_model_sha256": openvino_ir.saved_model_hash(args.model),
    "calibration": {
      "source": describe_source(source),
      "images": calibration_count,
      "command": "python -m model.quantize " + shlex.join(argv),
    },
    "evaluation": {
      "what": what,
      "held_out": bool(args.truth_data),
      "reference": measured["reference"],
      "images": measured["images"],
      "pixels": measured["pixels"],
    },
    "gate": gate,
    "agreement": measured["agreement"]["openvino int8"],
    "agreement_openvino_fp32": measured["agreement"]["openvino fp32"],
    "mean_iou": None,
  }
  if measured["mean_iou"] is not None:
    block["mean_iou"] = {
      "fp32": measured["mean_iou"]["tensorflow fp32"],
      "int8": measured["mean_iou"]["openvino int8"],
      "openvino_fp32": measured["mean_iou"]["openvino fp32"],
    }
  return block


def _speed_block(runs: dict[str, Any], example: np.ndarray, size: int, seconds: float) -> dict[str, Any]:
  """fp32 and int8 batch-1 speed on this CPU, with what a reader needs to weigh it (CPU, size, load)."""
  image = speed_image(example, size)
  return {
    "cpu": cpu.probe().name,
    "batch": 1,
    "size": size,
    "threads": "all cores",
    "load_average": round(os.getloadavg()[0], 2),
    "images_per_s": images_per_second({"fp32": runs["openvino fp32"], "int8": runs["openvino int8"]}, image, seconds),
  }


def quantize(args: argparse.Namespace, argv: Sequence[str]) -> int:
  """Calibrate, measure, gate, then write (or not); returns the exit status."""
  card = read_card(args.model)
  source = calibration_source(args, card)
  spec = card_input(card)
  _refuse_calibration_as_truth(args, source)
  try:
    import nncf
  except ImportError:
    raise QuantizeError("model.quantize needs NNCF: pip install -c requirements.lock -e '.[quantize]'") from None
  import openvino

  images = calibration_images(source, spec, args.subset)
  print(f"model.quantize: calibrating on {len(images)} images of {describe_source(source)}", file=sys.stderr)
  fp32_ir, _ = openvino_ir.locate_ir(args.model)
  quantized = quantize_ir(fp32_ir, images)
  examples, what = _evaluation_examples(args, images, spec)
  staging = tempfile.mkdtemp(prefix="deconvseg-int8-")
  try:
    openvino_ir.save_ir(quantized, os.path.join(staging, openvino_ir.IR_FOLDER), openvino_ir.INT8_FILE)
    runs, measured = _measure(args.model, staging, spec, examples, card)
    gate = judge(measured, args.agreement_min, args.miou_drop_max)
    block = _int8_block(args, argv, source, len(images), what, measured, gate)
    if not gate["passed"] and not args.force:
      print(failure_block(block, measured), file=sys.stderr)
      print(
        json.dumps({"written": False, "gate": gate, "agreement": block["agreement"], "mean_iou": block["mean_iou"]})
      )
      return 1
    gate["status"] = "passed" if gate["passed"] else "failed, forced"
    if args.speed_seconds > 0:
      block["speed"] = _speed_block(runs, examples[0][0], args.speed_size, args.speed_seconds)
    block.update(nncf=nncf.__version__, openvino=openvino.get_version(), created=_now())
    openvino_ir.save_ir(quantized, os.path.join(args.model, openvino_ir.IR_FOLDER), openvino_ir.INT8_FILE)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  card = read_card(args.model)  # as it is now, so a concurrent edit of another block is kept
  card.setdefault("openvino", {})["int8"] = block
  write_json_file(os.path.join(args.model, "card.json"), card)
  print(format_table(block, measured))
  print(json.dumps(dict(block, written=os.path.join(args.model, block["ir"]))), flush=True)
  return 0


def _now() -> str:
  import datetime

  return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def main(argv: Sequence[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  from model.data.image_io import ImageFormatError

  try:
    return quantize(args, argv)
  except (QuantizeError, ImageFormatError, FileNotFoundError) as exc:
    print(f"model.quantize: error: {exc}", file=sys.stderr)
    return 2
