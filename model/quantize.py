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

import numpy as np

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


def read_card(model_dir: str) -> dict:
  path = os.path.join(model_dir, "card.json")
  try:
    with open(path, encoding="utf-8") as handle:
      return json.load(handle)
  except OSError:
    raise QuantizeError(f"{model_dir} is not an exported model directory: it has no card.json") from None
  except ValueError as exc:
    raise QuantizeError(f"{path} is not valid JSON: {exc}") from None


def training_data_dir(card: dict):
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


def calibration_source(args, card: dict):
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


def describe_source(source) -> str:
  return f"files {source[1]}" if source[0] == "glob" else f"{source[1]} split {source[2]}"


def glob_images(pattern: str, spec, limit: int):
  """The first ``limit`` files of ``pattern`` (sorted) as [H, W, C] arrays of the model's dtype and bands."""
  from model.image_io import read_image

  paths = sorted(path for path in glob.glob(pattern, recursive=True) if os.path.isfile(path))
  if not paths:
    raise QuantizeError(f"--calibration {pattern!r} matches no files; {NOT_FOUND_HINT}")
  images = []
  for path in paths[:limit]:
    image = read_image(path)
    check_image(image, spec, path)
    images.append(image)
  return images


def check_image(image: np.ndarray, spec, name: str):
  if image.shape[2] != spec.channels or image.dtype != np.dtype(spec.dtype):
    raise QuantizeError(
      f"{name} is {image.shape[2]}-channel {image.dtype}, but the model takes {spec.channels}-channel {spec.dtype}"
    )


def split_examples(data_dir: str, split: str, spec, limit=None):
  """(image [H, W, C], mask [H, W]) pairs of a dataset split, in file order (``model.data``'s reader)."""
  from model.data import load_split

  try:
    dataset, _ = load_split(data_dir, split, channels=spec.channels, dtype=spec.dtype)
  except ValueError as exc:  # no such split: the message names what was expected
    raise QuantizeError(str(exc)) from None
  if limit is not None:
    dataset = dataset.take(limit)
  return [(image.numpy(), mask.numpy()) for image, mask in dataset]


def calibration_images(source, spec, limit: int):
  if source[0] == "glob":
    return glob_images(source[1], spec, limit)
  return [image for image, _mask in split_examples(source[1], source[2], spec, limit)]


def quantize_ir(fp32_ir: str, images):
  """NNCF's default post-training int8 quantisation of the IR, calibrated on ``images`` ([H, W, C] each)."""
  import nncf
  import openvino

  nncf.set_log_level(logging.WARNING)
  model = openvino.Core().read_model(fp32_ir)
  dataset = nncf.Dataset([image[None] for image in images])
  # NNCF draws its progress bars on stdout, which carries this command's JSON.
  with contextlib.redirect_stdout(sys.stderr):
    return nncf.quantize(model, dataset, subset_size=len(images))


def images_per_second(segmenters: dict, image: np.ndarray, seconds: float) -> dict:
  """Batch-1 throughput of each segmenter's ``predict`` on ``image``, {name: images/s}.

  Each is warmed up once (that call compiles), then they take turns in
  rounds of about a tenth of ``seconds`` until each has run ``seconds``: on
  a machine shared with other jobs, a load change then hits both alike.
  """
  batch = image[None]
  counts, spent = {}, {}
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


def judge(measured: dict, agreement_min: float, miou_drop_max: float) -> dict:
  """The gate's verdict on the int8 numbers: what passed, what failed, and why."""
  agreement = measured["agreement"]["openvino int8"]
  checks = {"agreement": agreement >= agreement_min}
  drop = None
  if measured["mean_iou"] is not None:
    drop = round(measured["mean_iou"]["tensorflow fp32"] - measured["mean_iou"]["openvino int8"], 6)
    checks["mean_iou"] = drop <= miou_drop_max
  return {
    "agreement_min": agreement_min,
    "miou_drop_max": miou_drop_max,
    "passed": all(checks.values()),
    "checks": checks,
    "miou_drop": drop,
  }


def format_table(block: dict, measured: dict) -> str:
  """fp32 against int8, one line per measure, and where it was measured."""
  agreement = measured["agreement"]
  mean_iou = measured["mean_iou"] or {}
  speed = (block.get("speed") or {}).get("images_per_s") or {}

  def cell(value, digits):
    return f"{value:>14.{digits}f}" if isinstance(value, (int, float)) else f"{'-':>14}"

  lines = [
    f"{'':<34}{'TF fp32':>14}{'OpenVINO fp32':>14}{'OpenVINO int8':>14}",
    f"{'class-id agreement with TF fp32':<34}{cell(1.0, 6)}{cell(agreement['openvino fp32'], 6)}"
    f"{cell(agreement['openvino int8'], 6)}",
    f"{'mean IoU against truth masks':<34}{cell(mean_iou.get('tensorflow fp32'), 4)}"
    f"{cell(mean_iou.get('openvino fp32'), 4)}{cell(mean_iou.get('openvino int8'), 4)}",
  ]
  if speed:
    size = block["speed"]["size"]
    label = f"images/s, batch 1, {size}x{size}"
    lines.append(f"{label:<34}{cell(None, 0)}{cell(speed.get('fp32'), 2)}{cell(speed.get('int8'), 2)}")
  gate = block["gate"]
  verdict = gate.get("status", "passed" if gate["passed"] else "failed")
  lines.append(
    f"gate {verdict}: agreement >= {gate['agreement_min']}"
    + (f", mean IoU drop {gate['miou_drop']:+.4f} <= {gate['miou_drop_max']}" if gate["miou_drop"] is not None else "")
  )
  lines.append(f"measured on {block['evaluation']['images']} {block['evaluation']['what']}")
  return "\n".join(lines)


def failure_block(block: dict, measured: dict) -> str:
  gate = block["gate"]
  lines = ["model.quantize: int8 accuracy gate failed; nothing written (--force writes it anyway)"]
  agreement = measured["agreement"]["openvino int8"]
  mark = "ok" if gate["checks"]["agreement"] else "FAIL"
  lines.append(f"  agreement with TF fp32: {agreement:.6f} (needs >= {gate['agreement_min']})  {mark}")
  if gate["miou_drop"] is not None:
    mean_iou = measured["mean_iou"]
    mark = "ok" if gate["checks"]["mean_iou"] else "FAIL"
    lines.append(
      f"  mean IoU fp32 {mean_iou['tensorflow fp32']:.4f}, int8 {mean_iou['openvino int8']:.4f}: "
      f"drop {gate['miou_drop']:.4f} (needs <= {gate['miou_drop_max']})  {mark}"
    )
  else:
    lines.append("  mean IoU: not measured (no --truth_data)")
  lines.append(f"  measured on {block['evaluation']['images']} {block['evaluation']['what']}")
  return "\n".join(lines)


def parse_args(argv=None):
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


def quantize(args, argv) -> int:
  """Calibrate, measure, gate, then write (or not); returns the exit status."""
  card = read_card(args.model)
  source = calibration_source(args, card)
  spec = card_input(card)
  if args.truth_data and source[0] == "data":
    same_data = os.path.abspath(args.truth_data) == os.path.abspath(source[1])
    if same_data and args.truth_split == source[2]:
      raise QuantizeError("--truth_data/--truth_split is the calibration split itself; pass a held-out split")
  try:
    import nncf
  except ImportError:
    raise QuantizeError("model.quantize needs NNCF: pip install -c requirements.lock -e '.[quantize]'") from None
  import openvino

  from model import engines
  from model.engines.agreement import compare_segmenters

  images = calibration_images(source, spec, args.subset)
  print(f"model.quantize: calibrating on {len(images)} images of {describe_source(source)}", file=sys.stderr)
  fp32_ir, _ = openvino_ir.locate_ir(args.model)
  quantized = quantize_ir(fp32_ir, images)

  if args.truth_data:
    examples = split_examples(args.truth_data, args.truth_split, spec)
    what = f"held-out images of {args.truth_data} split {args.truth_split}"
  else:
    examples = [(image, None) for image in images]
    what = "calibration images (not held out: pass --truth_data for held-out images and mean IoU)"
  staging = tempfile.mkdtemp(prefix="deconvseg-int8-")
  try:
    openvino_ir.save_ir(quantized, os.path.join(staging, openvino_ir.IR_FOLDER), openvino_ir.INT8_FILE)
    reference = engines.load(args.model, EngineChoice("tensorflow", "fp32"), spec)
    runs = {
      "openvino fp32": engines.load(args.model, EngineChoice("openvino", "fp32"), spec),
      "openvino int8": engines.load(staging, EngineChoice("openvino", "int8"), spec),
    }
    measured = compare_segmenters(reference, runs, examples, len(card.get("classes") or []) or None)
    gate = judge(measured, args.agreement_min, args.miou_drop_max)
    block = {
      "ir": f"{openvino_ir.IR_FOLDER}/{openvino_ir.INT8_FILE}",
      "source_saved_model_sha256": openvino_ir.saved_model_hash(args.model),
      "calibration": {
        "source": describe_source(source),
        "images": len(images),
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
    if not gate["passed"] and not args.force:
      print(failure_block(block, measured), file=sys.stderr)
      print(
        json.dumps({"written": False, "gate": gate, "agreement": block["agreement"], "mean_iou": block["mean_iou"]})
      )
      return 1
    gate["status"] = "passed" if gate["passed"] else "failed, forced"
    if args.speed_seconds > 0:
      image = speed_image(examples[0][0], args.speed_size)
      block["speed"] = {
        "cpu": cpu.probe().name,
        "batch": 1,
        "size": args.speed_size,
        "threads": "all cores",
        "load_average": round(os.getloadavg()[0], 2),
        "images_per_s": images_per_second(
          {"fp32": runs["openvino fp32"], "int8": runs["openvino int8"]}, image, args.speed_seconds
        ),
      }
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


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  from model.image_io import ImageFormatError

  try:
    return quantize(args, argv)
  except (QuantizeError, ImageFormatError, FileNotFoundError) as exc:
    print(f"model.quantize: error: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
