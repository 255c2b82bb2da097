"""Wrap a trained segmentation model you already have (Keras 3, or ONNX from PyTorch) as this project's model directory.

    python -m model.wrap --keras my_model.keras --classes classes.json --out models/theirs
    python -m model.wrap --onnx my_unet.onnx --classes classes.json --out models/theirs --normalization imagenet

Writes a model directory with the contract of docs/CONTRACTS.md, so
``./run_pipeline.sh --model OUT`` segments with it. The served graph is an
adapter around your model: normalise the pixels (what you declare; by
default the model gets float pixel values), pad to the size multiple the
model needs (found by probing) or to its fixed input size, your model, its
output turned back into logits (--output), bilinear resize of the logits to
the padded size when the model predicts at a coarser stride, crop, softmax
and argmax. The model is probed before anything is written, and what is
written is reloaded and checked against your model.

--keras: OUT/saved_model/ (loads with TensorFlow alone: neither your
custom-layer module nor Python bytecode from Lambda layers is needed at
inference time) and its OpenVINO IR in OUT/openvino/.

--onnx: OUT/onnx/source.onnx (your file), OUT/onnx/model.onnx (the served
graph, plain ONNX: onnxruntime and onnxruntime-gpu run it) and its OpenVINO
IR in OUT/openvino/ (the CPU engine). The layout (NCHW as PyTorch exports,
or NHWC) is read from the graph; dynamic height and width are used when
the model has them, else the pipeline tiles at its fixed size. Imports
neither TensorFlow nor PyTorch.
"""

from model.wrap.cli import main

if __name__ == "__main__":
  main()
