"""Small ONNX segmentation models built with onnx.helper, as torch.onnx.export would write them (no PyTorch needed).

Fixed random weights; each model is a few Conv, Relu, MaxPool and Resize
nodes, enough to have a receptive field, a stride and a size multiple.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # torch.onnx.export's default


class _Graph:
  def __init__(self, seed):
    self.rng = np.random.default_rng(seed)
    self.nodes, self.initializers, self.count = [], [], 0

  def tensor(self, value, stem):
    self.count += 1
    name = f"{stem}.{self.count}"
    self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
    return name

  def op(self, op_type, inputs, output=None, **attributes):
    self.count += 1
    output = output or f"/{op_type}_{self.count}_output_0"
    self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"/{op_type}_{self.count}", **attributes))
    return output

  def conv(self, x, cin, cout, kernel=3, stride=1, relu=True, gain=1.0):
    weight = self.rng.normal(0, gain * np.sqrt(2 / (cin * kernel * kernel)), (cout, cin, kernel, kernel))
    bias = self.rng.normal(0, 0.1, cout)
    y = self.op(
      "Conv",
      [x, self.tensor(weight.astype(np.float32), "conv.weight"), self.tensor(bias.astype(np.float32), "conv.bias")],
      kernel_shape=[kernel, kernel],
      pads=[kernel // 2] * 4,
      strides=[stride, stride],
    )
    return self.op("Relu", [y]) if relu else y

  def upsample(self, x, factor, mode="linear"):
    scales = self.tensor(np.array([1, 1, factor, factor], np.float32), "scales")
    return self.op("Resize", [x, "", scales], mode=mode, coordinate_transformation_mode="half_pixel")

  def model(self, name, input_shape, output_shape, output, opset=OPSET):
    graph = helper.make_graph(
      self.nodes,
      name,
      [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)],
      [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
      initializer=self.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pytorch")
    model.producer_version = "2.5.1"
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def nchw_stride4_softmax(classes=3, seed=2):
  """NCHW, dynamic batch/height/width: two stride-2 convolutions, a 1x1 head and a Softmax: output at 1/4."""
  g = _Graph(seed)
  x = g.conv("input", 3, 8, stride=2)
  x = g.conv(x, 8, 8, stride=2)
  x = g.conv(x, 8, classes, kernel=1, relu=False, gain=3.0)
  out = g.op("Softmax", [x], output="output", axis=1)
  return g.model("stride4", ["batch", 3, "height", "width"], ["batch", classes, "h4", "w4"], out)


def nhwc_logits(classes=4, seed=2):
  """NHWC in and out, logits at full size: conv, pool, conv, bilinear x2 back up, skip, 1x1 head (multiple 2)."""
  g = _Graph(seed)
  x = g.op("Transpose", ["input"], perm=[0, 3, 1, 2])
  skip = g.conv(x, 3, 6)
  down = g.conv(g.op("MaxPool", [skip], kernel_shape=[2, 2], strides=[2, 2]), 6, 6)
  x = g.op("Concat", [g.upsample(down, 2), skip], axis=1)
  x = g.conv(x, 12, classes, kernel=1, relu=False, gain=3.0)
  out = g.op("Transpose", [x], output="logits", perm=[0, 2, 3, 1])
  return g.model("unet_nhwc", ["N", "H", "W", 3], ["N", "H", "W", classes], out)


def fixed_256(classes=3, seed=1):
  """NCHW fixed at 1x3x256x256 (torch.onnx.export without dynamic_axes): conv, pool, conv, nearest x2, logits."""
  g = _Graph(seed)
  x = g.conv("input", 3, 6)
  x = g.conv(g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), 6, 6)
  x = g.conv(g.upsample(x, 2, mode="nearest"), 6, classes, kernel=3, relu=False, gain=3.0)
  out = g.op("Identity", [x], output="logits")
  return g.model("fixed256", [1, 3, 256, 256], [1, classes, 256, 256], out)


def unet(classes=3, seed=4):
  """The README walkthrough's U-Net: NCHW with dynamic batch, height and width, one pooling level, a skip, logits."""
  g = _Graph(seed)
  skip = g.conv("input", 3, 8)
  down = g.conv(g.op("MaxPool", [skip], kernel_shape=[2, 2], strides=[2, 2]), 8, 8)
  x = g.op("Concat", [g.upsample(down, 2), skip], axis=1)
  out = g.op("Identity", [g.conv(x, 16, classes, kernel=1, relu=False, gain=3.0)], output="logits")
  return g.model("unet", ["batch", 3, "height", "width"], ["batch", classes, "height", "width"], out)
