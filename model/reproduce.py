"""Rebuild the bundled default model from scratch with the project's own commands.

    python -m model.reproduce --out model/default

Runs, one after another: generate the training set (seed 1), generate a fresh
test set (seed 2, never seen in training), train FCN-2s, export with the test
metrics in the card. About 20 minutes on two CPU cores. Results vary slightly
between runs: multi-threaded CPU kernels are not bit-deterministic. The int8
IR is a separate, gated step (``python -m model.quantize``, docs/MODEL.md).
"""

from model.artifact.reproduce import main

if __name__ == "__main__":
  main()
