"""model.wrap --onnx: a user's ONNX segmentation model (PyTorch's torch.onnx.export, say) as a model directory.

Reads and checks the file, finds the input layout (NCHW or NHWC) and a fixed
input size from the graph, probes the model on OpenVINO (which reads ONNX
natively) for its output stride and the size multiple it runs at, composes
the served graph around it (``model.wrap.onnx_graph``), converts that to the
OpenVINO IR the CPU engine runs, and checks the IR against the user's model
computed step by step in numpy (the probing and that check are
``model.wrap.onnx_probe``). Neither TensorFlow nor PyTorch is imported.

    OUT/onnx/source.onnx   the user's file, unchanged
    OUT/onnx/model.onnx    the served graph (onnxruntime, onnxruntime-gpu)
    OUT/openvino/model.xml its IR (the CPU engine), keyed in the card by model.onnx's hash
    OUT/card.json
"""

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import onnx

from model.artifact.card import CARD_FORMAT, color_name, created_now
from model.data import classes as classes_module
from model.engines import openvino_ir
from model.json_file import write_json_file
from model.wrap.common import (
  LAYOUTS,
  WrapError,
  WrapSettings,
  check_normalization,
  check_scores,
  probe_images,
  probe_sizes,
  resolve_output,
  sha256_of,
)
from model.wrap.onnx_graph import FLOAT_TYPES, MIN_OPSET, compose, opset_of
from model.wrap.onnx_probe import Probe, find_geometry, normalise, run_probe, short_error, verify

ONNX_FOLDER, SERVED_FILE = os.path.split(openvino_ir.ONNX_FILE)
SOURCE_FILE = "source.onnx"
MAX_BANDS = 16  # a static dimension this small next to the batch axis is the channel axis


def served_path(model_dir: str) -> str:
  return os.path.join(model_dir, openvino_ir.ONNX_FILE)


def _dims(value: Any) -> list[int | None]:
  """A value_info's dims: int for a fixed one, None for a symbolic or unknown one."""
  shape = value.type.tensor_type.shape
  return [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in shape.dim]


def load_onnx(path: str) -> tuple[Any, int]:
  """The user's model, checked, at opset 13 or later (older graphs are converted)."""
  if not os.path.isfile(path):
    raise WrapError(f"--onnx {path}: no such file; give the .onnx file torch.onnx.export wrote")
  try:
    model = onnx.load(path)
  except Exception as exc:
    raise WrapError(f"{path} is not a readable ONNX model ({short_error(exc)})") from None
  if not model.graph.node:
    raise WrapError(f"{path} holds no ONNX graph (no nodes); is it an ONNX model file?")
  try:
    onnx.checker.check_model(model)
  except Exception as exc:
    raise WrapError(f"{path} is not a valid ONNX model ({short_error(exc)})") from None
  opset = opset_of(model)
  if opset < MIN_OPSET:
    try:
      model = onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
      raise WrapError(
        f"{path} uses opset {opset}, which cannot be converted to {MIN_OPSET} ({short_error(exc, 160)}); "
        f"re-export it with opset_version={MIN_OPSET} or later"
      ) from None
  return model, opset


def graph_io(model: Any) -> tuple[Any, Any]:
  """(input value_info, output value_info) of a graph with one image input and one score output."""
  initializers = {tensor.name for tensor in model.graph.initializer}
  inputs = [value for value in model.graph.input if value.name not in initializers]
  outputs = list(model.graph.output)
  if len(inputs) != 1 or len(outputs) != 1:
    raise WrapError(
      f"the model has {len(inputs)} inputs and {len(outputs)} outputs; "
      "wrap a model with one image input and one per-pixel score output"
    )
  if len(_dims(inputs[0])) != 4:
    raise WrapError(f"the model's input has shape {_dims(inputs[0])}; expected 4 dimensions (NCHW or NHWC)")
  if inputs[0].type.tensor_type.elem_type not in FLOAT_TYPES:
    raise WrapError("the model's input is not a float tensor; wrap a model that takes normalised float pixels")
  return inputs[0], outputs[0]


def find_layout(dims: list[int | None], requested: str) -> str:
  """'NCHW' or 'NHWC': given, or read from which of axes 1 and 3 is a small fixed channel count."""
  if requested != "auto":
    return requested
  first, last = dims[1], dims[3]
  first_bands = first is not None and first <= MAX_BANDS
  last_bands = last is not None and last <= MAX_BANDS
  if first_bands and not last_bands:
    return "NCHW"
  if last_bands and not first_bands:
    return "NHWC"
  raise WrapError(f"cannot tell the layout of input shape {dims} from the graph; pass --layout NCHW or NHWC")


def layout_geometry(dims: list[int | None], layout: str) -> tuple[int, tuple[int, int] | None]:
  """(channels, fixed (H, W) or None) for the layout."""
  channels, height, width = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
  if channels is None:
    raise WrapError(f"the model's input shape {dims} has no fixed channel axis for layout {layout}")
  if (height is None) != (width is None):
    raise WrapError(
      f"the model's input shape {dims} fixes one side only; export it with both sides fixed or both dynamic"
    )
  if height is None or width is None:
    return int(channels), None
  return int(channels), (int(height), int(width))


def detect_output(model: Any, output_name: str) -> str:
  """'softmax' or 'sigmoid' when the node producing the output is one, else 'logits'."""
  producer = next((node for node in model.graph.node if output_name in node.output), None)
  return {"Softmax": "softmax", "Sigmoid": "sigmoid"}.get(producer.op_type if producer else "", "logits")


class UserGraph(NamedTuple):
  """The user's checked model and what its graph says about the input."""

  model: Any
  opset: int
  input_value: Any
  output_value: Any
  layout: str
  channels: int
  fixed_size: tuple[int, int] | None


def read_user_graph(onnx_path: str, layout: str, normalization: dict[str, Any]) -> UserGraph:
  """The model in ``onnx_path``, checked, with its input layout, bands and fixed size (or None)."""
  model, opset = load_onnx(onnx_path)
  input_value, output_value = graph_io(model)
  dims = _dims(input_value)
  layout = find_layout(dims, layout)
  channels, fixed_size = layout_geometry(dims, layout)
  check_normalization(normalization, channels)
  return UserGraph(model, opset, input_value, output_value, layout, channels, fixed_size)


def probe_settings(
  probe: Probe, graph: UserGraph, declared: WrapSettings, num_classes: int, log: Callable[[str], object]
) -> dict[str, Any]:
  """The served graph's settings: the size multiple, stride and output kind found by probing, and the user's choices."""
  layout, fixed_size, channels = graph.layout, graph.fixed_size, graph.channels
  dtype, normalization = declared.dtype, declared.normalization
  multiple, stride = find_geometry(probe, layout, fixed_size, channels, dtype, normalization, declared.size_multiple)
  probe_height, probe_width = fixed_size or probe_sizes(multiple)
  inputs = normalise(probe_images(2, probe_height, probe_width, channels, dtype, seed=3), normalization)
  scores, _ = run_probe(probe, inputs, layout)
  kind = resolve_output(
    detect_output(graph.model, graph.output_value.name),
    declared.output,
    scores.shape[-1],
    num_classes,
    log,
    last="node",
  )
  check_scores(scores, kind)
  if fixed_size is not None and min(fixed_size) < 32:
    log(f"warning: the pipeline's start-up check probes 32x32 images, larger than this model's {fixed_size}")
  return {
    "layout": layout,
    "normalization": normalization,
    "fixed_size": fixed_size,
    "multiple": multiple,
    "stride": stride,
    "kind": kind,
    "padding": declared.padding,
  }


def served_graph(graph: UserGraph, settings: dict[str, Any], input_dtype: str, num_classes: int) -> Any:
  """The composed served graph (``model.wrap.onnx_graph.compose``), checked as valid ONNX."""
  served = compose(
    graph.model,
    input_name=graph.input_value.name,
    output_name=graph.output_value.name,
    channels=graph.channels,
    input_dtype=input_dtype,
    num_classes=num_classes,
    **{key: value for key, value in settings.items() if key != "normalization"},
    normalization=settings["normalization"],
  )
  try:
    onnx.checker.check_model(served)
  except Exception as exc:
    raise WrapError(f"the composed graph is not valid ONNX ({short_error(exc)})") from None
  return served


def _write_served_files(
  staging: str,
  onnx_path: str,
  served: Any,
  probe: Probe,
  settings: dict[str, Any],
  channels: int,
  dtype: np.dtype,
  num_classes: int,
) -> str:
  """The user's file, the served graph and its IR into ``staging``, the IR verified; returns the served graph's hash."""
  os.makedirs(os.path.join(staging, ONNX_FOLDER))
  shutil.copyfile(onnx_path, os.path.join(staging, ONNX_FOLDER, SOURCE_FILE))
  onnx.save(served, served_path(staging))
  served_hash = sha256_of(served_path(staging))
  ir_file = openvino_ir.save_ir(
    openvino_ir.convert_onnx(served_path(staging)), os.path.join(staging, openvino_ir.IR_FOLDER)
  )
  verify(ir_file, probe, settings, channels, dtype, num_classes)
  return served_hash


def wrap_onnx(
  onnx_path: str,
  classes_path: str,
  out_dir: str,
  declared: WrapSettings,
  layout: str = "auto",
  command: str | None = None,
  created: str | None = None,
  log: Callable[[str], object] = print,
) -> dict[str, Any]:
  """Writes OUT/onnx/, OUT/openvino/ and OUT/card.json around the model in ``onnx_path``; returns the card."""

  if layout not in LAYOUTS:
    raise WrapError(f"--layout {layout} is not one of {LAYOUTS}")
  classes = [c.to_json() for c in classes_module.read_classes_file(classes_path)]
  graph = read_user_graph(onnx_path, layout, declared.normalization)
  with tempfile.TemporaryDirectory(prefix="deconvseg-wrap-") as workdir:
    probe = Probe(graph.model, graph.input_value, workdir)
    settings = probe_settings(probe, graph, declared, len(classes), log)
    served = served_graph(graph, settings, declared.input_dtype, len(classes))
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".wrap-", dir=parent)
    try:
      served_hash = _write_served_files(
        staging, onnx_path, served, probe, settings, graph.channels, declared.dtype, len(classes)
      )
      card = _card(onnx_path, graph, classes, settings, declared, command, created, served_hash)
      write_json_file(os.path.join(staging, "card.json"), card)
      _replace_dir(staging, out_dir)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  return card


def _replace_dir(staging: str, out_dir: str) -> None:
  """Puts the verified directory in place; an earlier wrap's model directory there is replaced, nothing else."""
  if os.path.exists(out_dir):
    if os.listdir(out_dir) and not os.path.exists(os.path.join(out_dir, "card.json")):
      raise WrapError(f"--out {out_dir} exists and is not a model directory; choose another --out")
    shutil.rmtree(out_dir)
  os.replace(staging, out_dir)


def _architecture(graph: UserGraph, settings: dict[str, Any]) -> dict[str, Any]:
  """The card's architecture: the user's graph as found by probing, and how the served graph upsamples it."""
  stride = settings["stride"]
  upsampling = "the model's own (full-resolution output)"
  if stride > 1:
    upsampling = f"the model's own, then its logits resized bilinearly x{stride} (output at 1/{stride} of the input)"
  return {
    "variant": graph.model.graph.name or "onnx",
    "encoder": "wrapped ONNX model",
    "parameters": sum(int(np.prod(tensor.dims)) for tensor in graph.model.graph.initializer),
    "upsampling": upsampling,
    "output": settings["kind"],
    "output_stride": stride,
    "size_multiple": settings["multiple"],
    "padding": settings["padding"],
    "layout": settings["layout"],
  }


def _wrapped_from(onnx_path: str, graph: UserGraph, settings: dict[str, Any]) -> dict[str, Any]:
  """The card's record of the user's file: hash, opset, producer, and where it is kept."""
  model = graph.model
  return {
    "format": "onnx",
    "file": os.path.basename(onnx_path),
    "sha256": sha256_of(onnx_path),
    "opset": graph.opset,
    "ir_version": model.ir_version,
    "producer": " ".join(part for part in (model.producer_name, model.producer_version) if part) or None,
    "layout": settings["layout"],
    "stored_as": f"{ONNX_FOLDER}/{SOURCE_FILE}",
  }


def _card(
  onnx_path: str,
  graph: UserGraph,
  classes: list[dict[str, Any]],
  settings: dict[str, Any],
  declared: WrapSettings,
  command: str | None,
  created: str | None,
  served_hash: str,
) -> dict[str, Any]:
  """The card of the wrapped model: its architecture as probed, input, classes, source and served files."""
  import openvino

  card: dict[str, Any] = {
    "name": declared.name or os.path.splitext(os.path.basename(onnx_path))[0],
    "version": declared.version,
    "format": CARD_FORMAT,
    "architecture": _architecture(graph, settings),
    "stride": settings["multiple"],
    "input": {
      "dtype": declared.input_dtype,
      "channels": graph.channels,
      "color": color_name(graph.channels),
      "normalization": settings["normalization"],
    },
    "classes": classes,
    "signatures": {
      "onnx": {"file": f"{ONNX_FOLDER}/{SERVED_FILE}", "input": "images", "outputs": ["class_ids", "confidence"]}
    },
    "wrapped_from": _wrapped_from(onnx_path, graph, settings),
    "onnx": {"served": f"{ONNX_FOLDER}/{SERVED_FILE}", "sha256": served_hash, "onnx_version": onnx.__version__},
    "openvino": {
      "ir": f"{openvino_ir.IR_FOLDER}/{openvino_ir.IR_FILE}",
      "weights": "fp32",
      "source_onnx_sha256": served_hash,
      "converter": f"openvino.convert_model of {ONNX_FOLDER}/{SERVED_FILE}, OpenVINO {openvino.get_version()}",
    },
    "command": command,
    "metrics": {},
    "created": created or created_now(),
  }
  if settings["fixed_size"] is not None:
    card["input_size"] = list(settings["fixed_size"])
  return card
