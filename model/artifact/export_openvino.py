"""Write an exported model's OpenVINO IR beside its SavedModel, and record it in the card.

    python -m model.export_openvino --model model/default --data /tmp/mosaic_test --split test

``model.export`` and ``model.wrap`` call this for every new export; run it by
hand for a directory exported before the OpenVINO engine existed (without it
the pipeline converts such a model once per machine into its cache). With
``--data``, the class-id agreement of OpenVINO fp32 (and bf16 where this CPU
has bf16 instructions) with TensorFlow fp32 is measured on that split's images
and recorded in the card's ``openvino`` block.
"""

import argparse
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from model.engines import card_input, cpu, openvino_ir
from model.engines.choice import EngineChoice
from model.engines.engine import InputShape
from model.json_file import write_json_file
from model.text import one_line


def write_ir(model_dir: str, card: dict[str, Any]) -> dict[str, Any]:
  """Converts the SavedModel, writes MODEL_DIR/openvino/model.xml and puts the ``openvino`` block in ``card``."""
  import openvino

  model = openvino_ir.convert_saved_model(model_dir)
  openvino_ir.save_ir(model, os.path.join(model_dir, openvino_ir.IR_FOLDER))
  block = card.get("openvino")
  previous = block if isinstance(block, dict) else {}
  card["openvino"] = {
    "ir": f"{openvino_ir.IR_FOLDER}/{openvino_ir.IR_FILE}",
    "weights": "fp32",
    "source_saved_model_sha256": openvino_ir.saved_model_hash(model_dir),
    "converter": f"openvino.convert_model of serving_default, OpenVINO {openvino.get_version()}",
  }
  if "int8" in previous:  # kept: its own SavedModel hash says whether it still applies
    card["openvino"]["int8"] = previous["int8"]
  return card


def add_ir(model_dir: str, card: dict[str, Any], log: Callable[[str], object] = print) -> dict[str, Any]:
  """``write_ir`` for a fresh export; a graph OpenVINO cannot convert leaves the model TensorFlow-only, with a warning.

  The pipeline's ``--engine auto`` then runs such a model on TensorFlow, so an
  export never fails because of its CPU engine.
  """
  try:
    return write_ir(model_dir, card)
  except Exception as exc:
    card.pop("openvino", None)
    reason = one_line(exc, 300)
    log(f"warning: no OpenVINO IR for {model_dir} ({type(exc).__name__}: {reason}); it will run on TensorFlow")
    return card


def split_images(data_dir: str, split: str, spec: InputShape) -> Iterator[np.ndarray]:
  """The split's images as [H, W, C] arrays of the model's dtype (``model.data``'s reader)."""
  from model.data.data import load_split

  dataset, _ = load_split(data_dir, split, channels=spec.channels, dtype=spec.dtype)
  for image, _mask in dataset:
    yield image.numpy()


def measure_agreement(model_dir: str, card: dict[str, Any], data_dir: str, split: str) -> dict[str, Any]:
  """The card's ``openvino.agreement``: OpenVINO fp32 (and bf16 where available) against TensorFlow fp32."""
  from model.engines.agreement import class_id_agreement

  candidates = [EngineChoice("openvino", "fp32")]
  if cpu.probe().bf16:
    candidates.append(EngineChoice("openvino", "bf16"))
  spec = card_input(card)
  result = class_id_agreement(model_dir, split_images(data_dir, split, spec), spec, candidates)
  result.update(data=data_dir, split=split, cpu=cpu.probe().name)
  result["command"] = f"python -m model.export_openvino --model DIR --data {data_dir} --split {split}"
  return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, help="exported model directory (saved_model/ + card.json)")
  parser.add_argument("--data", default=None, help="dataset (model.make_dataset layout) to measure the agreement on")
  parser.add_argument("--split", default="test")
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  card_path = os.path.join(args.model, "card.json")
  with open(card_path, encoding="utf-8") as handle:
    card = json.load(handle)
  write_ir(args.model, card)
  if args.data:
    card["openvino"]["agreement"] = measure_agreement(args.model, card, args.data, args.split)
  write_json_file(card_path, card)
  print(json.dumps(card["openvino"], indent=2))
  return 0
