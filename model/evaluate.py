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

from model.training.evaluate import main

if __name__ == "__main__":
  main()
