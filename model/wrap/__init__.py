"""Wrapping an outside model (Keras or ONNX) as a model directory the pipeline serves (python -m model.wrap)."""
