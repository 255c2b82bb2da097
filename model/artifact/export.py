"""Export a trained checkpoint as the self-contained model directory of docs/CONTRACTS.md.

    python -m model.export --checkpoint runs/default/best.keras --out model/default \
        --evaluate_data data/mosaic_test --evaluate_split test

Writes OUT/saved_model/ (signatures `serving_default` and
`serving_mixed_float16`, plus the `segment` tf.function), OUT/openvino/ (the
same graph as an OpenVINO IR, for the CPU engine) and OUT/card.json.
Normalisation, padding to the stride, cropping, softmax and argmax all happen
inside the graph, so the pipeline needs only TensorFlow to load and run it.
"""

import argparse
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import tensorflow as tf

from model.artifact.card import CARD_FORMAT, color_name, created_now
from model.artifact.export_openvino import add_ir, measure_agreement
from model.data import classes as classes_module
from model.json_file import write_json_file
from model.network.fcn import NETWORK_STRIDE, NORMALIZATION, UPSAMPLING_DESCRIPTIONS

INPUT_DTYPES = ("uint8", "uint16")
# What models trained before the card recorded its input (and the bundled default) take.
DEFAULT_INPUT = {"dtype": "uint8", "channels": 3, "color": "RGB", "normalization": dict(NORMALIZATION)}


def images_spec(input_description: Mapping[str, Any]) -> Any:
  """The serving signature's input: the card's dtype and channel count, any batch, height and width."""
  dtype = input_description["dtype"]
  if dtype not in INPUT_DTYPES:
    raise ValueError(f"input dtype {dtype!r} is not one of {INPUT_DTYPES}")
  return tf.TensorSpec([None, None, None, int(input_description["channels"])], tf.as_dtype(dtype), name="images")


def _compute_layers(model: Any) -> Iterator[Any]:
  """Every layer that computes, nested models included: a wrapped user model is one layer of its adapter."""
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      yield from _compute_layers(layer)
    elif not isinstance(layer, keras.layers.InputLayer):
      yield layer


@contextlib.contextmanager
def mixed_precision_policies(model: Any) -> Iterator[Any]:
  """Temporarily compute every layer but the final logits in float16, sharing the same variables.

  Tracing the mixed-precision serving function inside this context gives a
  second graph over the *same* weights, so the export is not twice the size.
  Layers named "logits" or "normalise", or marked ``keep_float32``, stay in float32.
  """
  original: dict[int, tuple[Any, Any]] = {}
  for layer in _compute_layers(model):
    # Normalising in float16 would overflow 16-bit inputs (65535 > float16's 65504).
    if layer.name in ("logits", "normalise") or getattr(layer, "keep_float32", False):
      continue
    original[id(layer)] = (layer, layer.dtype_policy)
    layer.dtype_policy = "mixed_float16"
  try:
    yield model
  finally:
    for layer, policy in original.values():
      layer.dtype_policy = policy


class SegmentationModule(tf.Module):
  """Images in the card's dtype and bands in, per-pixel class ids (uint8) and winning-class probability (float32) out."""

  def __init__(self, model: Any, input_description: Mapping[str, Any] | None = None) -> None:
    super().__init__()
    self.model = model
    # Read by the pipeline's start-up check against the card's class list.
    self.num_classes = tf.Variable(int(model.output_shape[-1]), trainable=False, dtype=tf.int32, name="num_classes")
    spec = images_spec(input_description or DEFAULT_INPUT)
    self.segment = tf.function(self._segment, input_signature=[spec])
    # A second tf.function object has its own trace cache: traced under float16 policies, it stays so.
    self.segment_mixed_float16 = tf.function(self._segment, input_signature=[spec])
    self.segment.get_concrete_function()
    with mixed_precision_policies(model):
      self.segment_mixed_float16.get_concrete_function()

  def _segment(self, images: Any) -> Any:
    # An empty batch (Beam can send one) must give empty outputs; convolutions reject N = 0.
    shape = tf.shape(images)
    return tf.cond(
      shape[0] > 0,
      lambda: self._run_network(images),
      lambda: {"class_ids": tf.zeros(shape[:3], tf.uint8), "confidence": tf.zeros(shape[:3], tf.float32)},
    )

  def _run_network(self, images: Any) -> dict[str, Any]:
    logits = self.model(tf.cast(images, tf.float32), training=False)
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    return {
      "class_ids": tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8),
      "confidence": tf.reduce_max(probabilities, axis=-1),
    }


def _architecture(model: Any, run: Mapping[str, Any]) -> dict[str, Any]:
  settings = run.get("settings", {})
  upsampling = settings.get("upsampling", "bilinear")
  return {
    "variant": settings.get("variant", "fcn8s"),
    "encoder": settings.get("encoder", "compact"),
    "parameters": int(model.count_params()),
    "upsampling": UPSAMPLING_DESCRIPTIONS[upsampling],
  }


def input_description(model: Any, run: Mapping[str, Any]) -> dict[str, Any]:
  """The card's input block: run.json's (dtype, channels, normalisation) or the 8-bit RGB default."""
  description = dict(run.get("input") or DEFAULT_INPUT)
  description["channels"] = int(model.input_shape[-1])
  description["color"] = color_name(description["channels"])
  return description


def signatures_block() -> dict[str, Any]:
  return {
    "serving_default": {"input": "images", "outputs": ["class_ids", "confidence"]},
    "serving_mixed_float16": {"input": "images", "outputs": ["class_ids", "confidence"]},
  }


def training_band_stats(run: Mapping[str, Any]) -> dict[str, Any] | None:
  """The training split's per-band mean, std, p01, p99 (input units) from run.json, for the pipeline's OOD check."""
  stats = (run.get("data_check") or {}).get("band_stats")
  if not stats:
    return None
  path = (run.get("dataset") or {}).get("path", "DATA")
  return dict(stats, command=f"python -m model.check_data {path} --splits train --json")


def build_card(
  model: Any, run: Mapping[str, Any], name: str, version: str, metrics: dict[str, Any] | None = None
) -> dict[str, Any]:
  settings = run.get("settings", {})
  dataset = run.get("dataset", {})
  card: dict[str, Any] = {
    "name": name,
    "version": version,
    "format": CARD_FORMAT,
    "architecture": _architecture(model, run),
    "stride": NETWORK_STRIDE,
    "input": input_description(model, run),
    "classes": run["classes"],
    "signatures": signatures_block(),
    "trained_on": {
      "dataset": dataset.get("name", "unknown"),
      "generator": dataset.get("generator"),
      "seed": dataset.get("seed"),
      "train_images": run.get("train_images"),
      "image_size": settings.get("image_size", dataset.get("image_size")),
      "band_stats": training_band_stats(run),
    },
    "training": {
      "epochs": settings.get("epochs"),
      "batch_size": settings.get("batch_size"),
      "learning_rate": settings.get("learning_rate"),
      "schedule": "linear warm-up then cosine decay; best checkpoint by validation mean IoU",
      "class_weights": run.get("class_weights"),
      "command": run.get("command"),
    },
    "metrics": {},
    "created": created_now(),
  }
  if metrics is not None:
    card["metrics"]["test"] = metrics
  return card


def export(
  checkpoint: str,
  out_dir: str,
  name: str = "deconvseg-default",
  version: str = "1.0.0",
  run_json: str | None = None,
) -> dict[str, Any]:
  """Write OUT/saved_model and OUT/card.json (without test metrics); returns the card."""
  model = keras.models.load_model(checkpoint, compile=False)  # no optimizer state in the export
  run_json = run_json or os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "run.json")
  run: dict[str, Any] = {}
  if os.path.exists(run_json):
    with open(run_json) as handle:
      run = json.load(handle)
  num_classes = model.output_shape[-1]
  if "classes" not in run:
    raise ValueError(
      f"no class list for {checkpoint}: {run_json} is missing or has no 'classes'; pass --run_json with the "
      "training run's run.json (model.train writes it beside the checkpoints)"
    )
  classes = [c.to_json() for c in classes_module.classes_from_json(run["classes"], source=run_json)]
  run["classes"] = classes
  if len(classes) != num_classes:
    raise ValueError(f"the model has {num_classes} outputs but the class list has {len(classes)} entries")
  if num_classes > 256:
    raise ValueError("class ids are exported as uint8: at most 256 classes")
  save_module(SegmentationModule(model, input_description(model, run)), out_dir)
  card = add_ir(out_dir, build_card(model, run, name, version), log=lambda line: print(line, file=sys.stderr))
  write_card(out_dir, card)
  return card


def save_module(module: Any, out_dir: str) -> str:
  """Write OUT/saved_model (replacing an old one) with both serving signatures; returns its path."""
  saved_model_dir = os.path.join(out_dir, "saved_model")
  if os.path.exists(saved_model_dir):
    shutil.rmtree(saved_model_dir)
  os.makedirs(out_dir, exist_ok=True)
  tf.saved_model.save(
    module,
    saved_model_dir,
    signatures={
      "serving_default": module.segment.get_concrete_function(),
      "serving_mixed_float16": module.segment_mixed_float16.get_concrete_function(),
    },
  )
  return saved_model_dir


def write_card(out_dir: str, card: Mapping[str, Any]) -> None:
  write_json_file(os.path.join(out_dir, "card.json"), card)


def card_metrics(result: Mapping[str, Any], model_dir: str) -> dict[str, Any]:
  """The card's metrics.test block from a model.evaluate result of the model in ``model_dir``."""
  keys = (
    "pixel_accuracy",
    "mean_accuracy",
    "mean_iou",
    "fw_iou",
    "per_class_iou",
    "seed",
    "images",
    "split",
    "mean_confidence",
    "image_confidence",
  )
  metrics = {key: result[key] for key in keys}
  metrics["command"] = f"python -m model.evaluate --model {model_dir} --data {result['data']} --split {result['split']}"
  return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True, help=".keras checkpoint from model.train")
  parser.add_argument("--out", required=True, help="model directory to write (saved_model/ + card.json)")
  parser.add_argument("--name", default="deconvseg-default")
  parser.add_argument("--version", default="1.0.0")
  parser.add_argument("--run_json", default=None, help="run.json of the training run (default: beside the checkpoint)")
  parser.add_argument("--evaluate_data", default=None, help="dataset to evaluate the export on, for metrics.test")
  parser.add_argument("--evaluate_split", default="test")
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  card = export(args.checkpoint, args.out, args.name, args.version, args.run_json)
  if args.evaluate_data:
    from model.training.evaluate import evaluate, format_table

    result = evaluate(args.out, args.evaluate_data, args.evaluate_split)
    print(format_table(result), file=sys.stderr)
    card["metrics"]["test"] = card_metrics(result, args.out)
    if "openvino" in card:
      card["openvino"]["agreement"] = measure_agreement(args.out, card, args.evaluate_data, args.evaluate_split)
    write_card(args.out, card)
  print(json.dumps({"out": args.out, "parameters": card["architecture"]["parameters"], "metrics": card["metrics"]}))
