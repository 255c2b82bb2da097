"""The OpenVINO form of an exported model: converted from its SavedModel, stored beside it or in a cache.

    MODEL_DIR/saved_model/          the source of truth (TensorFlow)
    MODEL_DIR/openvino/model.xml    its IR, fp32 weights (written by model.export and model.wrap)
    MODEL_DIR/openvino/model_int8.xml  post-training int8 (written by model.quantize)

A model wrapped from ONNX (``model.wrap --onnx``) has no SavedModel: its
source of truth is the served graph ``MODEL_DIR/onnx/model.onnx``, and the
card's ``openvino.source_onnx_sha256`` keys the IR to it in the same way.
OpenVINO reads ONNX natively, so that conversion needs no TensorFlow.

The card's ``openvino`` block records the SavedModel hash the IR was made
from; an IR whose hash no longer matches, or a directory without one (older
exports, ``gs://`` models), is converted once per machine into a cache keyed
by that hash (``$DECONVSEG_CACHE``, else ``~/.cache/deconvseg``), under a file
lock so the worker processes of one machine convert it once between them.
Conversion is the one step of the OpenVINO path that imports TensorFlow.

Why not ``openvino.convert_model(saved_model_dir)``: it fails on this
export's variables (``VarHandleOp``); the ``serving_default`` concrete
function converts. That function wraps the network in the export's
empty-batch conditional; the conversion keeps just its non-empty branch (the
engine handles empty batches itself), which leaves a plain graph that
post-training quantisation can work on.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any, Optional, Tuple

IR_FOLDER = "openvino"
IR_FILE = "model.xml"
INT8_FILE = "model_int8.xml"
OUTPUT_NAMES = ("class_ids", "confidence")
NUM_CLASSES_KEY = ["deconvseg", "num_classes"]
ONNX_FILE = "onnx/model.onnx"  # the served graph of a model wrapped from ONNX
ONNX_NUM_CLASSES_PROP = "deconvseg.num_classes"  # its metadata_props entry


def model_format(model_dir: str) -> str:
  """'saved_model' (exported or wrapped from Keras), 'onnx' (wrapped from ONNX) or 'openvino' (an IR alone)."""
  if os.path.isdir(os.path.join(model_dir, "saved_model")):
    return "saved_model"
  if os.path.exists(os.path.join(model_dir, ONNX_FILE)):
    return "onnx"
  return "openvino"


def file_hash(path: str) -> str:
  digest = hashlib.sha256()
  for block in _blocks(path):
    digest.update(block)
  return digest.hexdigest()


def _blocks(path: str) -> Iterator[bytes]:
  """The file's bytes, a MiB at a time."""
  with open(path, "rb") as handle:
    yield from iter(lambda: handle.read(1 << 20), b"")


def ir_path(model_dir: str, int8: bool = False) -> str:
  return os.path.join(model_dir, IR_FOLDER, INT8_FILE if int8 else IR_FILE)


def saved_model_hash(model_dir: str) -> str:
  """sha256 over the SavedModel's files (relative paths and bytes), the key of converted IRs."""
  root = os.path.join(model_dir, "saved_model")
  digest = hashlib.sha256()
  for folder, dirs, files in sorted(os.walk(root)):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(folder, name)
      digest.update(os.path.relpath(path, root).replace(os.sep, "/").encode("utf-8") + b"\0")
      for block in _blocks(path):
        digest.update(block)
  return digest.hexdigest()


def cache_root() -> str:
  explicit = os.environ.get("DECONVSEG_CACHE")
  if explicit:
    return explicit
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "deconvseg")


def read_card(model_dir: str) -> dict[str, Any]:
  try:
    with open(os.path.join(model_dir, "card.json"), encoding="utf-8") as handle:
      return json.load(handle)
  except (OSError, ValueError):
    return {}


def _bundled_ir_current(model_dir: str, card: dict, source_hash: Optional[str]) -> bool:
  block = card.get("openvino") if isinstance(card, dict) else None
  if not isinstance(block, dict) or not os.path.exists(ir_path(model_dir)):
    return False
  recorded = block.get("source_saved_model_sha256")
  return recorded is not None and recorded == (source_hash or saved_model_hash(model_dir))


def int8_problem(model_dir: str, card: Optional[dict] = None, source_hash: Optional[str] = None) -> Optional[str]:
  """Why the directory's int8 IR cannot be used (missing, unrecorded, or made from another SavedModel), else None.

  An int8 IR left behind by a re-export would segment with the old weights,
  so it must carry the hash of the SavedModel it was quantised from.
  """
  if not os.path.exists(ir_path(model_dir, int8=True)):
    return f"{model_dir} has no int8 IR ({IR_FOLDER}/{INT8_FILE})"
  if not os.path.isdir(os.path.join(model_dir, "saved_model")):
    return None  # an IR-only directory: nothing to be stale against
  card = read_card(model_dir) if card is None else card
  block = ((card.get("openvino") or {}).get("int8") or {}) if isinstance(card, dict) else {}
  recorded = block.get("source_saved_model_sha256")
  if recorded != (source_hash or saved_model_hash(model_dir)):
    return f"{model_dir}'s int8 IR was not made from its current SavedModel (card.json openvino.int8)"
  return None


def locate_ir(model_dir: str, int8: bool = False) -> Tuple[str, str]:
  """(path of the IR to run, where it came from: 'model directory', 'cache' or 'converted').

  The int8 IR only comes from the model directory (``model.quantize`` makes
  it against a calibration set; nothing converts one silently).
  """
  card = read_card(model_dir)
  source_hash = saved_model_hash(model_dir) if os.path.isdir(os.path.join(model_dir, "saved_model")) else None
  if int8:
    problem = int8_problem(model_dir, card, source_hash)
    if problem:
      raise FileNotFoundError(f"{problem}; run python -m model.quantize --model {model_dir}")
    return ir_path(model_dir, int8=True), "model directory"
  if source_hash is None and os.path.exists(os.path.join(model_dir, ONNX_FILE)):
    return _locate_onnx_ir(model_dir, card)
  if source_hash is None:  # an IR-only directory
    if os.path.exists(ir_path(model_dir)):
      return ir_path(model_dir), "model directory"
    raise FileNotFoundError(f"{model_dir} has neither saved_model/ nor {IR_FOLDER}/{IR_FILE}")
  if _bundled_ir_current(model_dir, card, source_hash):
    return ir_path(model_dir), "model directory"
  cached = os.path.join(cache_root(), "openvino", source_hash[:24], IR_FILE)
  if os.path.exists(cached):
    return cached, "cache"
  os.makedirs(os.path.dirname(os.path.dirname(cached)), exist_ok=True)
  with _file_lock(os.path.dirname(cached) + ".lock"):
    if os.path.exists(cached):  # another process converted it while this one waited
      return cached, "cache"
    save_ir(convert_saved_model(model_dir), os.path.dirname(cached))
  return cached, "converted"


def _locate_onnx_ir(model_dir: str, card: dict) -> Tuple[str, str]:
  """``locate_ir`` for a model wrapped from ONNX: its own IR when made from its served graph, else a cached one."""
  onnx_hash = file_hash(os.path.join(model_dir, ONNX_FILE))
  block = card.get("openvino") if isinstance(card, dict) else None
  if isinstance(block, dict) and block.get("source_onnx_sha256") == onnx_hash and os.path.exists(ir_path(model_dir)):
    return ir_path(model_dir), "model directory"
  cached = os.path.join(cache_root(), "openvino", "onnx-" + onnx_hash[:24], IR_FILE)
  if os.path.exists(cached):
    return cached, "cache"
  os.makedirs(os.path.dirname(os.path.dirname(cached)), exist_ok=True)
  with _file_lock(os.path.dirname(cached) + ".lock"):
    if os.path.exists(cached):
      return cached, "cache"
    save_ir(convert_onnx(os.path.join(model_dir, ONNX_FILE)), os.path.dirname(cached))
  return cached, "converted"


def convert_onnx(path: str) -> Any:
  """A served ONNX graph (``model.wrap --onnx``) as an ``openvino.Model`` with its class count in the runtime info."""
  import openvino

  model = openvino.Core().read_model(path)
  framework = model.get_rt_info()["framework"] if model.has_rt_info(["framework"]) else {}
  declared = framework.get(ONNX_NUM_CLASSES_PROP) if hasattr(framework, "get") else None
  if declared is not None:
    model.set_rt_info(int(declared.astype(int)), NUM_CLASSES_KEY)
  return model


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
  with open(path, "a+") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def convert_saved_model(model_dir: str) -> Any:
  """The model's ``serving_default`` as an ``openvino.Model`` (needs TensorFlow; seconds)."""
  import openvino
  import tensorflow as tf

  module = tf.saved_model.load(os.path.join(model_dir, "saved_model"))
  signature = module.signatures.get("serving_default")
  if signature is None:
    raise ValueError(f"{model_dir} has no 'serving_default' signature to convert")
  model = convert_function(openvino, signature)
  declared = getattr(module, "num_classes", None)
  if declared is not None:
    model.set_rt_info(int(declared.numpy()) if hasattr(declared, "numpy") else int(declared), NUM_CLASSES_KEY)
  return model


def declared_classes(model: Any) -> int | None:
  """The class count the export recorded (its ``num_classes`` variable), kept in the IR's runtime info."""
  if not model.has_rt_info(NUM_CLASSES_KEY):
    return None
  try:
    return int(model.get_rt_info(NUM_CLASSES_KEY).astype(int))
  except (TypeError, ValueError, RuntimeError):
    return None


def convert_model(openvino: Any, source: Any) -> Any:
  """``openvino.convert_model`` that leaves the root logger as it found it.

  The converter sets the root logger to ERROR while it works and restores it
  only when it succeeds (OpenVINO 2026.4, ``tools/ovc/convert.py``), so one
  failed conversion (a probe, the engine fallback) would silence every later
  warning of the run.
  """
  root = logging.getLogger()
  level, filters, handlers = root.level, list(root.filters), list(root.handlers)
  try:
    return openvino.convert_model(source)
  finally:
    root.setLevel(level)
    root.filters, root.handlers = filters, handlers


def convert_function(openvino: Any, function: Any) -> Any:
  """A TensorFlow concrete function with the contract's outputs as a plain ``openvino.Model``."""
  model = convert_model(openvino, function)
  model = _without_empty_batch_branch(model)
  for output, name in zip(_ordered_outputs(model), OUTPUT_NAMES):
    output.get_tensor().set_names({name})
  model.inputs[0].get_tensor().set_names({"images"})
  return model


def _ordered_outputs(model: Any) -> list[Any]:
  """The model's outputs in contract order (class_ids, then confidence), found by name or element type."""
  outputs = list(model.outputs)
  by_name = {}
  for output in outputs:
    for name in output.get_names():
      by_name[name] = output
  if all(name in by_name for name in OUTPUT_NAMES):
    return [by_name[name] for name in OUTPUT_NAMES]
  return sorted(outputs, key=lambda output: 0 if output.get_element_type().to_dtype().name == "uint8" else 1)


def _without_empty_batch_branch(model: Any) -> Any:
  """The non-empty branch of a top-level ``If`` that produces every output; the model itself otherwise."""
  results = model.get_results()
  sources = {result.input_value(0).get_node().get_friendly_name() for result in results}
  conditionals = [op for op in model.get_ordered_ops() if op.get_type_name() == "If"]
  if len(conditionals) != 1 or sources != {conditionals[0].get_friendly_name()}:
    return model
  branch = conditionals[0].get_function(0)
  parameters = branch.get_parameters()
  image = model.inputs[0]
  if (
    len(parameters) != 1
    or parameters[0].get_element_type() != image.get_element_type()
    or parameters[0].get_partial_shape().rank != image.get_partial_shape().rank
    or len(branch.outputs) != len(results)
  ):
    return model
  # Name the branch's outputs after the If outputs they become.
  for result in results:
    source = result.input_value(0)
    branch.outputs[source.get_index()].get_tensor().set_names(set(result.output(0).get_names()))
  return branch


def save_ir(model: Any, folder: str, file_name: str = IR_FILE) -> str:
  """Writes ``folder/file_name`` (+ .bin) with fp32 weights, atomically (a reader never sees half an IR)."""
  import openvino

  os.makedirs(os.path.dirname(os.path.abspath(folder)) or ".", exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".ir-", dir=os.path.dirname(os.path.abspath(folder)))
  try:
    openvino.save_model(model, os.path.join(staging, file_name), compress_to_fp16=False)
    os.makedirs(folder, exist_ok=True)
    stem = os.path.splitext(file_name)[0]
    # .bin first: an .xml that exists always has its weights.
    for suffix in (".bin", ".xml"):
      os.replace(os.path.join(staging, stem + suffix), os.path.join(folder, stem + suffix))
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return os.path.join(folder, file_name)
