"""The start-up check of --model: its card, its engine, and one probe batch through it.

Separate from the flag checks in ``pipeline/checks.py`` because it loads
the model on its engine (``model.engines``). ``pipeline/run.py`` calls ``check_model`` after
the flags are valid and gets back the model's ``SegmenterHandle``
(``transforms.inference``), which holds the loaded model for workers in the
launcher's process, so a local run loads it once.
"""

import json
import logging
from typing import Any

import numpy as np
from apache_beam.io.filesystems import FileSystems

from model import engines
from model.engines import EngineError, cpu, openvino_ir
from model.engines.choice import EngineChoice
from model.text import one_line
from pipeline.errors import OptionsError
from transforms.imaging.input_spec import InputSpec
from transforms.model_runtime import SegmenterHandle, class_id_beyond
from transforms.staging import local_copy

_LOG = logging.getLogger(__name__)
# What an engine can run: an exported or Keras-wrapped SavedModel, an ONNX-wrapped served graph, or an IR alone.
MODEL_FILES = ("saved_model/saved_model.pb", openvino_ir.ONNX_FILE, f"{openvino_ir.IR_FOLDER}/{openvino_ir.IR_FILE}")


def load_card(model_dir: str) -> dict[str, Any]:
  """Reads and checks card.json (structure only; the model is checked separately)."""
  card_path = model_dir.rstrip("/") + "/card.json"
  try:
    with FileSystems.open(card_path, compression_type="uncompressed") as handle:
      card = json.loads(handle.read().decode("utf-8"))
  except json.JSONDecodeError as exc:
    raise OptionsError(f"model card {card_path} is not valid JSON ({exc}); re-export the model.") from None
  except Exception as exc:
    raise OptionsError(
      f"cannot read the model card {card_path} ({exc}). --model must name an exported "
      "model directory containing card.json and its model (saved_model/, or onnx/ and openvino/)."
    ) from None
  classes = card.get("classes") if isinstance(card, dict) else None
  if not isinstance(classes, list) or not classes:
    raise OptionsError(f"model card {card_path} has no 'classes' list; re-export the model.")
  if len(classes) > 256:
    raise OptionsError(f"model card {card_path} lists {len(classes)} classes; masks hold at most 256.")
  for index, entry in enumerate(classes):
    if not isinstance(entry, dict) or entry.get("id") != index or not entry.get("name"):
      raise OptionsError(f"model card {card_path}: classes[{index}] must have id {index} and a name.")
    color = entry.get("color", [0, 0, 0])
    if not (isinstance(color, list) and len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
      raise OptionsError(f"model card {card_path}: classes[{index}].color must be three integers 0-255.")
  names = [entry["name"] for entry in classes]
  if len(set(names)) != len(names):
    raise OptionsError(f"model card {card_path}: class names must be unique.")
  try:
    InputSpec.from_card(card)
  except ValueError as exc:
    raise OptionsError(f"model card {card_path}: {exc}.") from None
  return card


def _check_signature(segmenter: Any, model_dir: str, spec: InputSpec) -> None:
  """Refuses a model whose input disagrees with its card's dtype or channel count.

  Read from the engine's graph (the SavedModel's serving_default, or the
  OpenVINO IR), so the message names the disagreement instead of a probe
  batch failing with a shape error.
  """
  try:
    dtype, channels = segmenter.input_signature()
  except ValueError as exc:
    raise OptionsError(f"{model_dir}: {exc}") from None
  problems = []
  if dtype != spec.dtype:
    problems.append(f"dtype {dtype} (card.json input.dtype: {spec.dtype})")
  if channels is not None and channels != spec.channels:
    problems.append(f"{channels} channels (card.json input.channels: {spec.channels})")
  if problems:
    raise OptionsError(
      f"the model in {model_dir} takes images of {' and '.join(problems)}; fix card.json's "
      "input block or re-export the model so card and signature match."
    )


def _load(
  model_dir: str,
  spec: InputSpec,
  engine: str,
  precision: str,
  mixed_precision: bool,
  threads: int,
  tta: str = "none",
) -> tuple[SegmenterHandle, EngineChoice, Any]:
  """(handle, choice, loaded segmenter) on the requested engine.

  With ``--engine auto``, a model OpenVINO cannot convert or run falls back
  to TensorFlow with one warning, as long as TensorFlow can load it; a
  SavedModel neither engine can load is refused with TensorFlow's reason.
  """
  handle = SegmenterHandle(model_dir, engine, precision, mixed_precision, spec, threads, tta=tta)
  local_dir = local_copy(model_dir)
  try:
    choice = handle.choose(local_dir)
  except EngineError as exc:
    raise OptionsError(str(exc)) from None
  try:
    return handle, choice, engines.load(local_dir, choice, spec, threads, tta)
  except Exception as exc:
    reason = f"{type(exc).__name__}: {one_line(exc, 300)}"
    if choice.engine == "tensorflow":
      if isinstance(exc, ValueError):
        raise OptionsError(str(exc)) from None
      raise OptionsError(
        f"cannot load the SavedModel in {model_dir}: {one_line(exc, 300)}. "
        "Re-export the model or point --model at another one."
      ) from None
    if openvino_ir.model_format(local_dir) == "onnx":  # no SavedModel to fall back to
      raise OptionsError(
        f"cannot run the ONNX model in {model_dir} on {choice.engine} ({reason}); wrap it again with "
        "python -m model.wrap --onnx."
      ) from None
    if engine != "auto" or tta != "none":
      raise OptionsError(
        f"cannot run the model in {model_dir} on OpenVINO ({reason}); re-export it, or use --engine tensorflow."
      ) from None
  fallback = _load(model_dir, spec, "tensorflow", "auto", mixed_precision, threads)
  _LOG.warning("OpenVINO cannot run %s (%s); it runs on TensorFlow instead", model_dir, reason)
  return fallback


def check_model(
  model_dir: str,
  card: dict[str, Any],
  engine: str = "auto",
  precision: str = "auto",
  mixed_precision: bool = False,
  threads: int = 0,
  hand_over: bool = False,
  tta: str = "none",
) -> SegmenterHandle:
  """Loads the model once on its engine, checks it against its card and returns the handle the workers load it through.

  Runs a small probe batch of the card's input dtype and channels through the
  same entry point the workers use, so a model that cannot load, lacks a
  signature, takes another input than its card says, returns the wrong
  outputs or emits class ids the card does not list is refused before the
  pipeline is built. An engine or precision this machine or model cannot
  run is refused here too, with what to do instead.

  With ``hand_over`` (workers in this process) the handle holds the model
  loaded here, so the run does not load it again; else it is let go here and
  each worker process loads its own. The handle's ``description`` says which
  engine, precision and CPU the check ran on (summary.json records it).
  """
  _check_files(model_dir)
  spec = InputSpec.from_card(card)
  handle, choice, segmenter = _load(model_dir, spec, engine, precision, mixed_precision, threads, tta)
  _check_signature(segmenter, model_dir, spec)
  num_classes = len(card["classes"])
  declared = segmenter.declared_classes()
  if declared is not None and declared != num_classes:
    raise OptionsError(
      f"the model in {model_dir} has {declared} classes but its card.json lists "
      f"{num_classes}; re-export the model so card and weights match."
    )
  _probe(segmenter, model_dir, card, spec, num_classes)
  checked = SegmenterHandle(
    handle.model_dir,
    handle.engine,
    handle.precision,
    mixed_precision,
    spec,
    threads,
    loaded=segmenter if hand_over else None,
    tta=tta,
  )
  checked.description = dict(
    segmenter.describe(),
    requested={"engine": engine, "precision": precision},
    reason=choice.reason,
    cpu=cpu.probe().describe(),
  )
  return checked


def _check_files(model_dir: str) -> None:
  """Refuses a directory that holds nothing an engine can run."""
  root = model_dir.rstrip("/")
  if not any(FileSystems.exists(f"{root}/{path}") for path in MODEL_FILES):
    raise OptionsError(
      f"{model_dir} has no saved_model/saved_model.pb (nor onnx/model.onnx or openvino/model.xml); --model must "
      "name an exported model directory (python -m model.export or python -m model.wrap writes one)."
    )


def _probe(segmenter: Any, model_dir: str, card: dict[str, Any], spec: InputSpec, num_classes: int) -> None:
  """Runs a probe batch through both entry points; refuses wrong shapes, dtypes or class ids.

  The workers' entry point (``segment_with_stats``) is traced or compiled here
  too, before the run starts.
  """
  size = max(32, int(card.get("stride", 1) or 1) * 2)
  if card.get("input_size"):  # a fixed-size model takes nothing larger
    size = min([size] + [int(v) for v in card["input_size"]])
  probe = np.random.default_rng(0).integers(
    0, spec.max_value + 1, size=(2, size, size, spec.channels), dtype=spec.numpy_dtype
  )
  try:
    class_ids, confidence = segmenter.predict(probe)
  except Exception as exc:
    raise OptionsError(
      f"the model in {model_dir} fails on a probe batch ({type(exc).__name__}: "
      f"{one_line(exc, 200)}); it does not follow docs/CONTRACTS.md."
    ) from None
  if class_ids.shape != probe.shape[:3] or confidence.shape != probe.shape[:3]:
    raise OptionsError(
      f"the model in {model_dir} returns shapes {class_ids.shape} and {confidence.shape} "
      f"for input {probe.shape}; expected [N, H, W] class_ids and confidence."
    )
  if class_ids.dtype != np.uint8 or confidence.dtype != np.float32:
    raise OptionsError(
      f"the model in {model_dir} returns {class_ids.dtype} class_ids and {confidence.dtype} "
      "confidence; the contract is uint8 and float32."
    )
  beyond = class_id_beyond(class_ids, num_classes)
  if beyond is not None:
    raise OptionsError(
      f"the model in {model_dir} produced class id {beyond} but its card.json "
      f"lists only {num_classes} classes; re-export the model so card and weights match."
    )
  try:  # the workers' entry point too; this also traces or compiles it before the run starts
    segmenter.segment_with_stats(probe, np.array([[0, size, 0, size]] * len(probe), np.int32), num_classes)
  except Exception as exc:
    raise OptionsError(
      f"the model in {model_dir} fails when its per-class statistics are reduced "
      f"({type(exc).__name__}: {one_line(exc, 200)})."
    ) from None
