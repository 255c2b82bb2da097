"""The start-up check of --model: its card, its SavedModel, and one probe batch through it.

Separate from the flag checks in ``pipeline/checks.py`` because it loads
TensorFlow and the model. ``pipeline/run.py`` calls ``check_model`` after
the flags are valid and gets back the model's ``SegmenterHandle``
(``transforms.inference``), which holds the loaded model for workers in the
launcher's process, so a local run loads it once.
"""

import json

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline.errors import OptionsError
from transforms.inference import Segmenter, SegmenterHandle, saved_model_path
from transforms.input_spec import InputSpec


def load_card(model_dir: str) -> dict:
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
      "model directory containing saved_model/ and card.json."
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


def _check_signature(segmenter, model_dir: str, spec: InputSpec):
  """Refuses a model whose serving_default input disagrees with its card's dtype or channel count.

  Read from the concrete function's input signature, so the message names
  the disagreement instead of a probe batch failing with a shape error.
  """
  from transforms.inference import DEFAULT_SIGNATURE

  signature = segmenter.module.signatures.get(DEFAULT_SIGNATURE)
  if signature is None:
    raise OptionsError(
      f"the model in {model_dir} has no '{DEFAULT_SIGNATURE}' signature; it does not follow docs/CONTRACTS.md."
    )
  args, kwargs = signature.structured_input_signature
  tensor = kwargs.get("images") if kwargs else (args[0] if args else None)
  if tensor is None:
    raise OptionsError(
      f"the model in {model_dir} has no 'images' input in '{DEFAULT_SIGNATURE}'; it does not follow docs/CONTRACTS.md."
    )
  dtype = tensor.dtype.name
  channels = tensor.shape[-1] if tensor.shape.rank else None
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


def check_model(model_dir: str, card: dict, mixed_precision: bool, hand_over: bool = False) -> SegmenterHandle:
  """Loads the SavedModel once, checks it against its card and returns the handle the workers load it through.

  Runs a small probe batch of the card's input dtype and channels through the
  same entry point the workers use, so a model that cannot load, lacks a
  signature, takes another input than its card says, returns the wrong
  outputs or emits class ids the card does not list is refused before the
  pipeline is built.

  With ``hand_over`` (workers in this process) the handle holds the model
  loaded here, so the run does not load it again; else it is let go here and
  each worker process loads its own.
  """
  if not FileSystems.exists(saved_model_path(model_dir) + "/saved_model.pb"):
    raise OptionsError(
      f"{model_dir} has no saved_model/saved_model.pb; --model must name an exported model "
      "directory (python -m model.export writes one)."
    )
  spec = InputSpec.from_card(card)
  try:
    segmenter = Segmenter(model_dir, mixed_precision, spec)
  except OptionsError:
    raise
  except ValueError as exc:
    raise OptionsError(str(exc)) from None
  except Exception as exc:
    raise OptionsError(
      f"cannot load the SavedModel in {model_dir}: {' '.join(str(exc).split())[:300]}. "
      "Re-export the model or point --model at another one."
    ) from None
  _check_signature(segmenter, model_dir, spec)
  num_classes = len(card["classes"])
  declared = getattr(segmenter.module, "num_classes", None)
  if declared is not None:
    try:
      declared = int(declared.numpy()) if hasattr(declared, "numpy") else int(declared)
    except (TypeError, ValueError):
      declared = None
  if declared is not None and declared != num_classes:
    raise OptionsError(
      f"the model in {model_dir} has {declared} classes but its card.json lists "
      f"{num_classes}; re-export the model so card and weights match."
    )
  size = max(32, int(card.get("stride", 1) or 1) * 2)
  if card.get("input_size"):  # a fixed-size model takes nothing larger
    size = min([size] + [int(v) for v in card["input_size"]])
  probe = np.random.default_rng(0).integers(
    0, spec.max_value + 1, size=(2, size, size, spec.channels), dtype=spec.numpy_dtype
  )
  try:
    class_ids, confidence = segmenter(probe)
  except Exception as exc:
    raise OptionsError(
      f"the model in {model_dir} fails on a probe batch ({type(exc).__name__}: "
      f"{' '.join(str(exc).split())[:200]}); it does not follow docs/CONTRACTS.md."
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
  if class_ids.size and int(class_ids.max()) >= num_classes:
    raise OptionsError(
      f"the model in {model_dir} produced class id {int(class_ids.max())} but its card.json "
      f"lists only {num_classes} classes; re-export the model so card and weights match."
    )
  try:  # the workers' entry point too; this also traces it before the run starts
    segmenter.segment_with_stats(probe, np.array([[0, size, 0, size]] * len(probe), np.int32), num_classes)
  except Exception as exc:
    raise OptionsError(
      f"the model in {model_dir} fails when its per-class statistics are reduced "
      f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})."
    ) from None
  return SegmenterHandle(model_dir, mixed_precision, spec, loaded=segmenter if hand_over else None)
