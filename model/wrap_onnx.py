"""model.wrap --onnx: a user's ONNX segmentation model (PyTorch's torch.onnx.export, say) as a model directory.

Reads and checks the file, finds the input layout (NCHW or NHWC) and a fixed
input size from the graph, probes the model on OpenVINO (which reads ONNX
natively) for its output stride and the size multiple it runs at, composes
the served graph around it (``model.wrap_onnx_graph``), converts that to the
OpenVINO IR the CPU engine runs, and checks the IR against the user's model
computed here step by step in numpy. Neither TensorFlow nor PyTorch is
imported.

    OUT/onnx/source.onnx   the user's file, unchanged
    OUT/onnx/model.onnx    the served graph (onnxruntime, onnxruntime-gpu)
    OUT/openvino/model.xml its IR (the CPU engine), keyed in the card by model.onnx's hash
    OUT/card.json
"""

import os
import shutil
import tempfile

import numpy as np
import onnx

from model import classes as classes_module
from model.card import CARD_FORMAT, color_name, created_now
from model.engines import openvino_ir
from model.json_file import write_json_file
from model.text import one_line
from model.wrap_common import (
  LAYOUTS,
  WrapError,
  check_normalization,
  check_scores,
  check_wrap_arguments,
  output_stride,
  probe_images,
  probe_sizes,
  resolve_output,
  search_multiple,
  sha256_of,
)
from model.wrap_onnx_graph import FLOAT_TYPES, MIN_OPSET, compose, opset_of

ONNX_FOLDER, SERVED_FILE = os.path.split(openvino_ir.ONNX_FILE)
SOURCE_FILE = "source.onnx"
MAX_BANDS = 16  # a static dimension this small next to the batch axis is the channel axis
# The probes compare with onnxruntime in fp32: OpenVINO would otherwise run bf16 on CPUs that have it (AVX-512 BF16,
# AMX), which moves confidences by about 1e-3.
EXACT = {"INFERENCE_PRECISION_HINT": "f32"}


def served_path(model_dir):
  return os.path.join(model_dir, openvino_ir.ONNX_FILE)


def _short(exc, limit=240):
  return f"{type(exc).__name__}: {one_line(exc, limit)}"


def _dims(value):
  """A value_info's dims: int for a fixed one, None for a symbolic or unknown one."""
  shape = value.type.tensor_type.shape
  return [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in shape.dim]


def load_onnx(path):
  """The user's model, checked, at opset 13 or later (older graphs are converted)."""
  if not os.path.isfile(path):
    raise WrapError(f"--onnx {path}: no such file; give the .onnx file torch.onnx.export wrote")
  try:
    model = onnx.load(path)
  except Exception as exc:
    raise WrapError(f"{path} is not a readable ONNX model ({_short(exc)})") from None
  if not model.graph.node:
    raise WrapError(f"{path} holds no ONNX graph (no nodes); is it an ONNX model file?")
  try:
    onnx.checker.check_model(model)
  except Exception as exc:
    raise WrapError(f"{path} is not a valid ONNX model ({_short(exc)})") from None
  opset = opset_of(model)
  if opset < MIN_OPSET:
    try:
      model = onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
      raise WrapError(
        f"{path} uses opset {opset}, which cannot be converted to {MIN_OPSET} ({_short(exc, 160)}); "
        f"re-export it with opset_version={MIN_OPSET} or later"
      ) from None
  return model, opset


def graph_io(model):
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


def find_layout(dims, requested):
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


def layout_geometry(dims, layout):
  """(channels, fixed (H, W) or None) for the layout."""
  channels, height, width = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
  if channels is None:
    raise WrapError(f"the model's input shape {dims} has no fixed channel axis for layout {layout}")
  if (height is None) != (width is None):
    raise WrapError(
      f"the model's input shape {dims} fixes one side only; export it with both sides fixed or both dynamic"
    )
  return int(channels), (None if height is None else (int(height), int(width)))


def detect_output(model, output_name):
  """'softmax' or 'sigmoid' when the node producing the output is one, else 'logits'."""
  producer = next((node for node in model.graph.node if output_name in node.output), None)
  return {"Softmax": "softmax", "Sigmoid": "sigmoid"}.get(producer.op_type if producer else "", "logits")


class Probe:
  """The user's model on OpenVINO with a dynamic batch: NCHW/NHWC float input -> its output array."""

  def __init__(self, model, input_value, workdir):
    import openvino

    relaxed = onnx.ModelProto()
    relaxed.CopyFrom(model)
    value = next(v for v in relaxed.graph.input if v.name == input_value.name)
    value.type.tensor_type.shape.dim[0].dim_param = "batch"  # torch.onnx.export fixes it at 1 by default
    path = os.path.join(workdir, "probe.onnx")
    onnx.save(relaxed, path)
    self._core = openvino.Core()
    try:
      self._model = openvino_ir.convert_model(openvino, path)
      self._compiled = self._core.compile_model(self._model, "CPU", EXACT)
    except Exception as exc:
      message = one_line(exc)
      unsupported = message.find("No conversion rule")
      if unsupported >= 0:
        message = message[unsupported:]
      raise WrapError(f"OpenVINO cannot run this model ({type(exc).__name__}: {message[:300]})") from None

  def __call__(self, inputs):
    if self._compiled is None:
      self._compiled = self._core.compile_model(self._model, "CPU", EXACT)
    try:
      return np.asarray(self._compiled(inputs.astype(np.float32))[0])
    except Exception:
      # OpenVINO 2026.4's dynamic-shape CPU graph can return wrong values after an inference that failed on
      # a size the model cannot take (seen on a 4-level U-Net, in about one process in three): start afresh.
      self._compiled = None
      raise


def normalise(images, normalization):
  x = images.astype(np.float32)
  if "mean" in normalization:
    return (x - np.float32(normalization["mean"])) / np.float32(normalization["std"])
  return x * np.float32(normalization["scale"]) + np.float32(normalization["offset"])


def to_layout(x, layout):
  return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "NCHW" else x


def scores_nhwc(outputs, layout):
  return outputs.transpose(0, 2, 3, 1) if layout == "NCHW" else outputs


def run_probe(probe, inputs_nhwc, layout):
  """(scores NHWC, stride) for one probe; WrapError when the output is not the input divided by one stride."""
  outputs = probe(to_layout(inputs_nhwc, layout))
  if outputs.ndim != 4 or outputs.shape[0] != inputs_nhwc.shape[0]:
    raise WrapError(f"the model returns shape {list(outputs.shape)}; expected [N, classes, H/s, W/s] ({layout})")
  scores = scores_nhwc(outputs, layout)
  return scores, output_stride(inputs_nhwc, scores)


def find_geometry(probe, layout, fixed_size, channels, dtype, normalization, size_multiple=None):
  """(size multiple, output stride), from probe batches of two images (so a batch-1-only model is found too)."""
  if fixed_size is not None:
    inputs = normalise(probe_images(2, *fixed_size, channels, dtype), normalization)
    try:
      return 1, run_probe(probe, inputs, layout)[1]
    except WrapError:
      raise
    except Exception as exc:
      raise WrapError(
        f"the model fails on a batch of 2 at its own input size {fixed_size} ({_short(exc, 160)}); "
        "export it with a dynamic batch axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))"
      ) from None

  def stride_at(height, width, seed):
    return run_probe(probe, normalise(probe_images(2, height, width, channels, dtype, seed), normalization), layout)[1]

  return search_multiple(stride_at, size_multiple, reason_limit=160)


def to_logits(scores, kind):
  """numpy twin of the served graph's step (float64)."""
  scores = scores.astype(np.float64)
  if kind == "logits":
    return scores
  if kind == "softmax":
    return np.log(np.maximum(scores, 1e-12))
  positive = scores
  if kind == "sigmoid":
    positive = np.log(np.maximum(scores, 1e-12)) - np.log(np.maximum(1 - scores, 1e-12))
  return np.concatenate([np.zeros_like(positive), positive], axis=-1)


def bilinear(array, factor):
  """Half-pixel-centre bilinear upsampling by an integer factor along axes 1 and 2 of NHWC (tf.image.resize's)."""
  for axis in (1, 2):
    size = array.shape[axis]
    position = np.clip((np.arange(size * factor) + 0.5) / factor - 0.5, 0, size - 1)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, size - 1)
    weight = (position - lower).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
    array = np.take(array, lower, axis=axis) * (1 - weight) + np.take(array, upper, axis=axis) * weight
  return array


def pad_image(images, target_height, target_width, padding):
  height, width = images.shape[1:3]
  pads = [(0, 0), (0, target_height - height), (0, target_width - width), (0, 0)]
  if padding == "zero":
    return np.pad(images, pads)
  rows = _mirror(height, target_height)
  return images[:, rows][:, :, _mirror(width, target_width)]


def _mirror(length, target):
  folded = np.arange(target) % (2 * length)
  return np.where(folded < length, folded, 2 * length - 1 - folded)


def reference(probe, images, settings):
  """(class ids, confidence): the served graph's steps in numpy around the user's model (OpenVINO)."""
  height, width = images.shape[1:3]
  multiple, fixed_size = settings["multiple"], settings["fixed_size"]
  target = fixed_size or (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
  x = pad_image(normalise(images, settings["normalization"]), *target, settings["padding"])
  scores, _ = run_probe(probe, x, settings["layout"])
  logits = bilinear(to_logits(scores, settings["kind"]), settings["stride"])[:, :height, :width]
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  return probabilities


def verify(ir_file, probe, settings, channels, dtype, num_classes):
  """Runs the written IR as the pipeline does and compares it with ``reference`` on a probe batch off the grid."""
  import openvino

  fixed_size, multiple = settings["fixed_size"], settings["multiple"]
  if fixed_size is not None:
    height, width = max(1, fixed_size[0] - 3), max(1, fixed_size[1] - 5)
  else:
    height, width = 3 * multiple + 5, 2 * multiple + 3  # off the multiple, so padding and cropping run
  images = probe_images(2, height, width, channels, dtype, seed=2)
  written = openvino.Core().read_model(ir_file)
  declared = openvino_ir.declared_classes(written)
  if declared != num_classes:
    raise WrapError(f"the written model reports {declared} classes, expected {num_classes}")
  result = openvino.Core().compile_model(written, "CPU", EXACT)(images)
  class_ids, confidence = (np.asarray(result[name]) for name in openvino_ir.OUTPUT_NAMES)
  probabilities = reference(probe, images, settings)
  if class_ids.shape != images.shape[:3] or confidence.shape != images.shape[:3]:
    raise WrapError(f"the written model returns shape {class_ids.shape} for input {images.shape}")
  ordered = np.sort(probabilities, axis=-1)
  decided = (ordered[..., -1] - ordered[..., -2]) > 1e-4  # near-ties may round either way
  if np.any(class_ids[decided] != probabilities.argmax(-1)[decided]):
    raise WrapError("the written model disagrees with the ONNX model on a probe batch")
  if not np.allclose(confidence, probabilities.max(-1), atol=1e-4):
    raise WrapError("the written model's confidence disagrees with the ONNX model on a probe batch")


def wrap_onnx(
  onnx_path,
  classes_path,
  out_dir,
  normalization=None,
  layout="auto",
  output="auto",
  input_dtype="uint8",
  size_multiple=None,
  padding="symmetric",
  name=None,
  version="1.0.0",
  command=None,
  created=None,
  log=print,
):
  """Writes OUT/onnx/, OUT/openvino/ and OUT/card.json around the model in ``onnx_path``; returns the card."""

  check_wrap_arguments(input_dtype, padding, size_multiple)
  if layout not in LAYOUTS:
    raise WrapError(f"--layout {layout} is not one of {LAYOUTS}")
  classes = [c.to_json() for c in classes_module.read_classes_file(classes_path)]
  normalization = normalization or {"scale": 1.0, "offset": 0.0}
  model, opset = load_onnx(onnx_path)
  input_value, output_value = graph_io(model)
  dims = _dims(input_value)
  layout = find_layout(dims, layout)
  channels, fixed_size = layout_geometry(dims, layout)
  check_normalization(normalization, channels)
  dtype = np.dtype(input_dtype)
  with tempfile.TemporaryDirectory(prefix="deconvseg-wrap-") as workdir:
    probe = Probe(model, input_value, workdir)
    multiple, stride = find_geometry(probe, layout, fixed_size, channels, dtype, normalization, size_multiple)
    probe_height, probe_width = fixed_size or probe_sizes(multiple)
    inputs = normalise(probe_images(2, probe_height, probe_width, channels, dtype, seed=3), normalization)
    scores, _ = run_probe(probe, inputs, layout)
    kind = resolve_output(
      detect_output(model, output_value.name), output, scores.shape[-1], len(classes), log, last="node"
    )
    check_scores(scores, kind)
    if fixed_size is not None and min(fixed_size) < 32:
      log(f"warning: the pipeline's start-up check probes 32x32 images, larger than this model's {fixed_size}")
    settings = {
      "layout": layout,
      "normalization": normalization,
      "fixed_size": fixed_size,
      "multiple": multiple,
      "stride": stride,
      "kind": kind,
      "padding": padding,
    }
    served = compose(
      model,
      input_name=input_value.name,
      output_name=output_value.name,
      channels=channels,
      input_dtype=input_dtype,
      num_classes=len(classes),
      **{key: value for key, value in settings.items() if key != "normalization"},
      normalization=normalization,
    )
    try:
      onnx.checker.check_model(served)
    except Exception as exc:
      raise WrapError(f"the composed graph is not valid ONNX ({_short(exc)})") from None
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".wrap-", dir=parent)
    try:
      os.makedirs(os.path.join(staging, ONNX_FOLDER))
      shutil.copyfile(onnx_path, os.path.join(staging, ONNX_FOLDER, SOURCE_FILE))
      onnx.save(served, served_path(staging))
      served_hash = sha256_of(served_path(staging))
      ir_file = openvino_ir.save_ir(
        openvino_ir.convert_onnx(served_path(staging)), os.path.join(staging, openvino_ir.IR_FOLDER)
      )
      verify(ir_file, probe, settings, channels, dtype, len(classes))
      card = _card(
        onnx_path, opset, model, classes, settings, channels, input_dtype, name, version, command, created, served_hash
      )
      write_json_file(os.path.join(staging, "card.json"), card)
      _replace_dir(staging, out_dir)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  return card


def _replace_dir(staging, out_dir):
  """Puts the verified directory in place; an earlier wrap's model directory there is replaced, nothing else."""
  if os.path.exists(out_dir):
    if os.listdir(out_dir) and not os.path.exists(os.path.join(out_dir, "card.json")):
      raise WrapError(f"--out {out_dir} exists and is not a model directory; choose another --out")
    shutil.rmtree(out_dir)
  os.replace(staging, out_dir)


def _card(
  onnx_path, opset, model, classes, settings, channels, input_dtype, name, version, command, created, served_hash
):
  import openvino

  stride, multiple = settings["stride"], settings["multiple"]
  upsampling = "the model's own (full-resolution output)"
  if stride > 1:
    upsampling = f"the model's own, then its logits resized bilinearly x{stride} (output at 1/{stride} of the input)"
  parameters = sum(int(np.prod(tensor.dims)) for tensor in model.graph.initializer)
  card = {
    "name": name or os.path.splitext(os.path.basename(onnx_path))[0],
    "version": version,
    "format": CARD_FORMAT,
    "architecture": {
      "variant": model.graph.name or "onnx",
      "encoder": "wrapped ONNX model",
      "parameters": parameters,
      "upsampling": upsampling,
      "output": settings["kind"],
      "output_stride": stride,
      "size_multiple": multiple,
      "padding": settings["padding"],
      "layout": settings["layout"],
    },
    "stride": multiple,
    "input": {
      "dtype": input_dtype,
      "channels": channels,
      "color": color_name(channels),
      "normalization": settings["normalization"],
    },
    "classes": classes,
    "signatures": {
      "onnx": {"file": f"{ONNX_FOLDER}/{SERVED_FILE}", "input": "images", "outputs": ["class_ids", "confidence"]}
    },
    "wrapped_from": {
      "format": "onnx",
      "file": os.path.basename(onnx_path),
      "sha256": sha256_of(onnx_path),
      "opset": opset,
      "ir_version": model.ir_version,
      "producer": " ".join(part for part in (model.producer_name, model.producer_version) if part) or None,
      "layout": settings["layout"],
      "stored_as": f"{ONNX_FOLDER}/{SOURCE_FILE}",
    },
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
