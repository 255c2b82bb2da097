"""Evaluate a model on one split: FCN's four metrics, per-class IoU and the boundary F-score.

    python -m model.evaluate --model model/default --data data/mosaic_test --split test

--model is an exported model directory (saved_model/ + card.json), evaluated
through its `segment` serving function so the numbers describe what ships, or
a `.keras` checkpoint from model.train. A directory wrapped from ONNX
(`model.wrap --onnx`, no SavedModel) is evaluated on the engine the pipeline
picks for it. With `--engine openvino
--precision fp32|bf16|int8` an exported directory is evaluated on the CPU
engine the pipeline runs instead (model/engines), so the metrics of each
precision can be set side by side. Beside IoU it reports the boundary
F-score (model/training/boundary.py: per class, the share of boundary pixels within
--bf_tolerance pixels of the other mask's, averaged over images), which
moves first when only the edges get sharper. Prints a table, then one JSON
object as the last line of stdout.
"""

import argparse
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from model.data import classes as classes_module
from model.data.data import evaluation_dataset
from model.metrics import confusion_matrix, segmentation_metrics
from model.training.boundary import (
  DEFAULT_TOLERANCE,
  BoundaryF1Mean,
  add_bf_tolerance_argument,
  boundary_f1,
  check_bf_tolerance_argument,
  check_tolerance,
)
from model.training.tiled import predict_image

# (segment function, class list, model kind, (channels, dtype)), as load_segmenter returns it: the function maps
# images [N, H, W, C] to float32 [N, H, W, 2] (class id, then the winning class's probability).
Loaded = tuple[Callable[[Any], Any], tuple[classes_module.SegmentationClass, ...], str, tuple[int, str]]


def _read_json(path: str) -> Any:
  with open(path) as handle:
    return json.load(handle)


def load_engine_segmenter(model_path: str, engine: str, precision: str) -> Loaded:
  """``load_segmenter``'s tuple for an exported directory run on a pipeline engine (``model.engines``)."""
  from model import engines

  card = _read_json(os.path.join(model_path, "card.json"))
  classes = classes_module.classes_from_json(card["classes"], source=os.path.join(model_path, "card.json"))
  spec = engines.card_input(card)
  choice = engines.choose_here(model_path, engine, precision)
  segmenter = engines.load(model_path, choice, spec)

  def segment(images: npt.ArrayLike) -> np.ndarray:
    class_ids, confidence = segmenter.predict(np.asarray(images))
    return np.stack([class_ids.astype(np.float32), confidence], axis=-1)

  return segment, classes, f"{choice.engine} {choice.precision}", (spec.channels, spec.dtype)


def load_segmenter(model_path: str) -> Loaded:
  """Return (segment function, class list, kind, (channels, dtype)).

  The function takes images [N,H,W,C] in the model's own dtype (uint8 or
  uint16) and bands, and returns float32 [N,H,W,2]: class id, then the
  winning class's probability (one array, so tiling stitches both alike).
  """
  if model_path.endswith(".keras"):
    import keras

    from model.network import layers  # noqa: F401  (registers the custom layers a checkpoint names)
    from model.training.train_validation import make_prediction_function

    model = keras.models.load_model(model_path)
    predict = make_prediction_function(model, with_confidence=True)
    run_path = os.path.join(os.path.dirname(model_path), "run.json")
    if not os.path.exists(run_path):
      raise ValueError(f"{run_path} is missing: a checkpoint is evaluated with its training run's class list")
    run = _read_json(run_path)
    dtype = (run.get("input") or {}).get("dtype", "uint8")
    channels = int(model.input_shape[-1])
    classes = classes_module.classes_from_json(run["classes"], source=run_path)
    return (lambda images: _stacked(*predict(tf.cast(images, tf.float32)))), classes, "keras", (channels, dtype)
  saved_model_dir = os.path.join(model_path, "saved_model")
  card_path = os.path.join(model_path, "card.json")
  if not os.path.isdir(saved_model_dir) or not os.path.exists(card_path):
    raise ValueError(
      f"{model_path} is neither a .keras checkpoint nor an exported model directory (saved_model/ + card.json)"
    )
  loaded = tf.saved_model.load(saved_model_dir)
  card = _read_json(card_path)
  classes = classes_module.classes_from_json(card["classes"], source=card_path)
  channels, dtype = int(card["input"].get("channels", 3)), card["input"].get("dtype", "uint8")

  def segment(images: Any) -> Any:
    outputs = loaded.segment(images)
    return _stacked(outputs["class_ids"], outputs["confidence"])

  return segment, classes, "saved_model", (channels, dtype)


def _stacked(class_ids: Any, confidence: Any) -> Any:
  return tf.stack([tf.cast(class_ids, tf.float32), tf.cast(confidence, tf.float32)], axis=-1)


def confidence_quantiles(image_means: Iterable[float]) -> dict[str, float]:
  """Quantiles of the per-image mean confidence: the reference the pipeline's OOD check compares with."""
  values = np.asarray(image_means, dtype=np.float64)
  return {f"p{q:02d}": round(float(np.percentile(values, q)), 4) for q in (1, 5, 50)}


def _is_onnx_model(model_path: str) -> bool:
  from model.engines.openvino_ir import model_format

  return os.path.isdir(model_path) and model_format(model_path) == "onnx"


def evaluate(
  model_path: str,
  data_dir: str,
  split: str = "test",
  engine: str = "tensorflow",
  precision: str = "fp32",
  bf_tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
  """Accumulate one confusion matrix and the per-image boundary F-scores over the split; the metrics dict."""
  bf_tolerance = check_tolerance(bf_tolerance)
  if engine == "tensorflow" and _is_onnx_model(model_path):
    engine = "auto"  # no SavedModel: its reference is the served ONNX graph, on the CPU engine
  if engine == "tensorflow" and precision in ("fp32", "auto"):
    segment, class_list, kind, (channels, dtype) = load_segmenter(model_path)
  else:
    segment, class_list, kind, (channels, dtype) = load_engine_segmenter(model_path, engine, precision)
  num_classes = len(class_list)
  class_names = [segmentation_class.name for segmentation_class in class_list]
  confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
  boundary = BoundaryF1Mean(num_classes)
  dataset, _ = evaluation_dataset(data_dir, split, channels=channels, dtype=dtype)
  started = time.monotonic()
  images, confidence_sum, confidence_pixels = 0, 0.0, 0
  image_means: list[float] = []
  for image, mask in dataset:
    # Native size, tiled like the pipeline when large, in the model's own dtype.
    output = predict_image(lambda batch: np.asarray(segment(tf.cast(batch, dtype))), image.numpy())
    class_ids, confidence = output[..., 0].astype(np.uint8), output[..., 1].astype(np.float64)
    labels = mask.numpy()
    confusion += confusion_matrix(labels, class_ids, num_classes)
    boundary.add(boundary_f1(labels, class_ids, num_classes, bf_tolerance))
    # Over every pixel of the image, as the pipeline's per-image mean_confidence.
    confidence_sum += float(confidence.sum())
    confidence_pixels += confidence.size
    image_means.append(float(confidence.mean()))
    images += 1
  if images == 0:
    raise ValueError(f"no images in split '{split}' of {data_dir}")
  metrics = segmentation_metrics(confusion, class_names)
  dataset_json = os.path.join(data_dir, "dataset.json")
  result: dict[str, Any] = {
    "model": model_path,
    "model_format": kind,
    "data": data_dir,
    "split": split,
    "seed": _read_json(dataset_json).get("seed") if os.path.exists(dataset_json) else None,
    "images": images,
    "pixels": int(confusion.sum()),
    "seconds": round(time.monotonic() - started, 2),
  }
  result.update(metrics)
  result.update(boundary.result(class_names, bf_tolerance))
  result["mean_confidence"] = confidence_sum / confidence_pixels
  result["image_confidence"] = confidence_quantiles(image_means)
  result["confusion_matrix"] = confusion.tolist()
  return result


def _as_text(value: float | None) -> str:
  return "n/a" if value is None else f"{value:.4f}"


def format_table(result: dict[str, Any]) -> str:
  lines = [f"{'class':<16}{'IoU':>8}{'accuracy':>10}{'BF':>8}"]
  for name, iou in result["per_class_iou"].items():
    lines.append(
      f"{name:<16}{_as_text(iou):>8}{_as_text(result['per_class_accuracy'][name]):>10}"
      f"{_as_text(result['per_class_boundary_f1'][name]):>8}"
    )
  lines.append("")
  lines.append(f"{'pixel acc.':>12}{'mean acc.':>12}{'mean IoU':>12}{'f.w. IoU':>12}")
  lines.append(
    f"{result['pixel_accuracy']:>12.4f}{result['mean_accuracy']:>12.4f}{result['mean_iou']:>12.4f}{result['fw_iou']:>12.4f}"
  )
  lines.append(
    f"mean boundary F-score {_as_text(result['mean_boundary_f1'])} (tolerance {result['boundary_tolerance']:g} px)"
  )
  lines.append(
    f"{result['images']} images, {result['pixels']} labelled pixels, split '{result['split']}' of {result['data']}"
  )
  quantiles = ", ".join(f"{name} {value:.4f}" for name, value in result["image_confidence"].items())
  lines.append(f"mean confidence {result['mean_confidence']:.4f}; per-image mean confidence {quantiles}")
  return "\n".join(lines)


class _OneLineParser(argparse.ArgumentParser):
  """Usage errors as one line and exit 2, as model.wrap's."""

  def error(self, message: str) -> NoReturn:
    self.exit(2, f"model.evaluate: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = _OneLineParser(
    prog="python -m model.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--model", required=True, help="exported model directory or .keras checkpoint")
  parser.add_argument("--data", required=True, help="dataset directory")
  parser.add_argument("--split", default="test")
  parser.add_argument(
    "--engine",
    default="tensorflow",
    choices=("tensorflow", "openvino", "onnxruntime", "auto"),
    help="engine of an exported directory: tensorflow (default, the reference; a model wrapped from ONNX runs "
    "on auto instead) or a pipeline engine",
  )
  parser.add_argument(
    "--precision", default="fp32", choices=("auto", "fp32", "bf16", "int8"), help="OpenVINO precision (default fp32)"
  )
  add_bf_tolerance_argument(parser)
  args = parser.parse_args(argv)
  check_bf_tolerance_argument(parser, args)
  return args


def main(argv: list[str] | None = None) -> None:
  args = parse_args(argv)
  result = evaluate(args.model, args.data, args.split, args.engine, args.precision, args.bf_tolerance)
  print(format_table(result))
  print(json.dumps(result), flush=True)
