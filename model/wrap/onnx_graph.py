"""The served ONNX graph model.wrap composes around a user's ONNX model, with ONNX nodes only.

    images <dtype>[N, H, W, C] -> cast, normalise -> pad (bottom/right) to the size multiple or the fixed size
      -> NCHW if the model wants it -> the user's graph, unchanged -> its scores as logits, NCHW
      -> bilinear resize of coarse logits (half-pixel centres, as tf.image.resize) -> crop to H x W
      -> class_ids uint8 [N, H, W] (argmax), confidence float32 [N, H, W] (the winner's softmax probability)

Plain ONNX (opset 13 or later, whatever the user's graph declares), so one
file runs on OpenVINO (its IR is converted from it) and on onnxruntime,
including onnxruntime-gpu. Symmetric padding is a Gather over mirrored
indices, which works for any pad size, like ``model.network.layers.PadToMultiple``.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from model.engines.openvino_ir import ONNX_NUM_CLASSES_PROP

MIN_OPSET = 13  # Softmax over one axis, Squeeze/Unsqueeze axes as inputs, Resize with half_pixel
PREFIX = "deconvseg/"
INPUT_NAME = "images"
OUTPUT_NAMES = ("class_ids", "confidence")
FLOOR = 1e-12  # as model.network.layers.ScoresToLogits: zero probabilities stay finite logs
PIXEL_TYPES = {"uint8": TensorProto.UINT8, "uint16": TensorProto.UINT16}
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)


class _Builder:
  """Nodes and constants with names that cannot clash with the user's graph."""

  def __init__(self) -> None:
    self.nodes: list[Any] = []
    self.initializers: list[Any] = []
    self._count = 0

  def name(self, stem: str) -> str:
    self._count += 1
    return f"{PREFIX}{stem}_{self._count}"

  def const(self, value: Any, dtype: Any, stem: str = "const") -> str:
    name = self.name(stem)
    self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
    return name

  def op(self, op_type: str, inputs: Sequence[str], output: str | None = None, **attributes: Any) -> str:
    output = output or self.name(op_type.lower())
    self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=self.name(op_type), **attributes))
    return output


def _axis_length(b: _Builder, shape: str, axis: int) -> str:
  """The image's size along ``axis`` as an int64 [1] tensor."""
  return b.op("Gather", [shape, b.const([axis], np.int64)], axis=0)


def _padded_length(b: _Builder, length: str, multiple: int, fixed: int | None) -> str:
  if fixed is not None:
    return b.const([fixed], np.int64)
  m = b.const([multiple], np.int64)
  return b.op("Mul", [b.op("Div", [b.op("Add", [length, b.const([multiple - 1], np.int64)]), m]), m])


def _mirror_indices(b: _Builder, length: str, target: str) -> str:
  """0..L-1 then back and forth (L-1..0, 0..L-1, ...) up to ``target``: symmetric padding of any size."""
  positions = b.op(
    "Range",
    [b.const(0, np.int64), b.op("Squeeze", [target, b.const([0], np.int64)]), b.const(1, np.int64)],
  )
  period = b.op("Mul", [length, b.const([2], np.int64)])
  folded = b.op("Mod", [positions, period])
  mirrored = b.op("Sub", [b.op("Sub", [period, b.const([1], np.int64)]), folded])
  return b.op("Where", [b.op("Less", [folded, length]), folded, mirrored])


def _pad(b: _Builder, x: str, shape: str, multiple: int, fixed_size: tuple[int, int] | None, padding: str) -> str:
  """Bottom/right padding of NHWC ``x`` to the fixed size or the next multiple (mirrored or zeros)."""
  if fixed_size is None and multiple == 1:
    return x
  targets = []
  for axis in (1, 2):
    length = _axis_length(b, shape, axis)
    target = _padded_length(b, length, multiple, None if fixed_size is None else fixed_size[axis - 1])
    targets.append((length, target))
  if padding == "zero":
    zeros = b.const([0, 0, 0, 0, 0], np.int64)
    extra = [b.op("Sub", [target, length]) for length, target in targets]
    pads = b.op("Concat", [zeros, extra[0], extra[1], b.const([0], np.int64)], axis=0)
    return b.op("Pad", [x, pads], mode="constant")
  for axis, (length, target) in zip((1, 2), targets):
    x = b.op("Gather", [x, _mirror_indices(b, length, target)], axis=axis)
  return x


def _normalise(b: _Builder, x: str, normalization: dict[str, Any]) -> str:
  if "mean" in normalization:
    x = b.op("Sub", [x, b.const(normalization["mean"], np.float32, "mean")])
    return b.op("Div", [x, b.const(normalization["std"], np.float32, "std")])
  x = b.op("Mul", [x, b.const(normalization["scale"], np.float32, "scale")])
  return b.op("Add", [x, b.const(normalization["offset"], np.float32, "offset")])


def _to_logits(b: _Builder, scores: str, kind: str) -> str:
  """NCHW scores -> NCHW logits whose softmax is the class probabilities (``ScoresToLogits``'s rules)."""
  if kind == "logits":
    return scores
  if kind == "binary_logit":
    positive = scores
  else:
    floor = b.const(FLOOR, np.float32)
    if kind == "softmax":
      return b.op("Log", [b.op("Max", [scores, floor])])
    complement = b.op("Max", [b.op("Sub", [b.const(1.0, np.float32), scores]), floor])
    positive = b.op("Sub", [b.op("Log", [b.op("Max", [scores, floor])]), b.op("Log", [complement])])
  return b.op("Concat", [b.op("Mul", [positive, b.const(0.0, np.float32)]), positive], axis=1)


def opset_of(model: Any) -> int:
  return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)


def _preprocess(
  b: _Builder,
  input_name: str,
  input_type: int,
  layout: str,
  normalization: dict[str, Any],
  multiple: int,
  fixed_size: tuple[int, int] | None,
  padding: str,
) -> str:
  """Pixels to the user's input: float, normalised, padded, in its layout and type; returns the pixels' shape tensor."""
  x = b.op("Cast", [INPUT_NAME], to=TensorProto.FLOAT)
  x = _normalise(b, x, normalization)
  shape = b.op("Shape", [INPUT_NAME])
  x = _pad(b, x, shape, multiple, fixed_size, padding)
  if layout == "NCHW":
    x = b.op("Transpose", [x], perm=[0, 3, 1, 2])
  if input_type == TensorProto.FLOAT:
    b.op("Identity", [x], output=input_name)
  else:
    b.op("Cast", [x], output=input_name, to=input_type)
  return shape


def _postprocess(b: _Builder, output_name: str, layout: str, kind: str, stride: int, shape: str) -> None:
  """The user's scores to logits at full size, cropped to the pixels' size, then class_ids and confidence."""
  scores = b.op("Cast", [output_name], to=TensorProto.FLOAT)
  if layout == "NHWC":
    scores = b.op("Transpose", [scores], perm=[0, 3, 1, 2])
  logits = _to_logits(b, scores, kind)
  if stride > 1:
    logits = b.op(
      "Resize",
      [logits, "", b.const([1, 1, stride, stride], np.float32, "scales")],
      mode="linear",
      coordinate_transformation_mode="half_pixel",
    )
  size = b.op("Gather", [shape, b.const([1, 2], np.int64)], axis=0)
  logits = b.op("Slice", [logits, b.const([0, 0], np.int64), size, b.const([2, 3], np.int64)])
  winner = b.op("ArgMax", [logits], axis=1, keepdims=1)
  probabilities = b.op("Softmax", [logits], axis=1)
  squeeze_axis = b.const([1], np.int64)
  b.op("Squeeze", [b.op("GatherElements", [probabilities, winner], axis=1), squeeze_axis], output=OUTPUT_NAMES[1])
  b.op("Cast", [b.op("Squeeze", [winner, squeeze_axis])], output=OUTPUT_NAMES[0], to=TensorProto.UINT8)


def _served_model(
  model: Any, nodes: list[Any], initializers: list[Any], input_dtype: str, channels: int, num_classes: int
) -> Any:
  """The served model from all its nodes and constants, keeping the user's opsets, functions and value infos."""
  graph = model.graph
  user_initializers = {tensor.name for tensor in graph.initializer}
  served = helper.make_graph(
    nodes,
    "deconvseg_served",
    [helper.make_tensor_value_info(INPUT_NAME, PIXEL_TYPES[input_dtype], ["N", "H", "W", channels])],
    [
      helper.make_tensor_value_info(OUTPUT_NAMES[0], TensorProto.UINT8, ["N", "H", "W"]),
      helper.make_tensor_value_info(OUTPUT_NAMES[1], TensorProto.FLOAT, ["N", "H", "W"]),
    ],
    initializer=initializers,
    value_info=[value for value in graph.value_info if value.name not in user_initializers],
  )
  served.sparse_initializer.extend(graph.sparse_initializer)
  result = helper.make_model(served, opset_imports=list(model.opset_import), producer_name="deconvseg model.wrap")
  result.ir_version = model.ir_version
  result.functions.extend(model.functions)
  helper.set_model_props(result, {ONNX_NUM_CLASSES_PROP: str(num_classes)})
  return result


def compose(
  model: Any,
  *,
  input_name: str,
  output_name: str,
  layout: str,
  channels: int,
  input_dtype: str,
  normalization: dict[str, Any],
  fixed_size: tuple[int, int] | None,
  multiple: int,
  stride: int,
  kind: str,
  padding: str,
  num_classes: int,
) -> Any:
  """The served ``onnx.ModelProto``: the user's graph (opset >= 13) between the pre- and post-processing above."""
  graph = model.graph
  user_input = next(value for value in graph.input if value.name == input_name)
  b = _Builder()
  input_type = user_input.type.tensor_type.elem_type
  shape = _preprocess(b, input_name, input_type, layout, normalization, multiple, fixed_size, padding)
  pre_nodes, pre_initializers = b.nodes, b.initializers
  b.nodes, b.initializers = [], []
  _postprocess(b, output_name, layout, kind, stride, shape)
  return _served_model(
    model,
    pre_nodes + list(graph.node) + b.nodes,
    pre_initializers + list(graph.initializer) + b.initializers,
    input_dtype,
    channels,
    num_classes,
  )
