"""Rebuild the bundled default model from scratch with the project's own commands.

    python -m model.reproduce --out model/default

Runs, one after another: generate the training set (seed 1), generate a fresh
test set (seed 2, never seen in training), train FCN-2s, export with the test
metrics in the card. About 20 minutes on two CPU cores. Results vary slightly
between runs: multi-threaded CPU kernels are not bit-deterministic. The int8
IR is a separate, gated step (``python -m model.quantize``, docs/MODEL.md).
"""

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence

from model.network.variants import VARIANTS


def _command(module: str, **flags: str) -> list[str]:
  """``-m module --flag value ...``, the flags in the order given."""
  command = ["-m", module]
  for flag, value in flags.items():
    command += [f"--{flag}", value]
  return command


def commands(out_dir: str, work_dir: str, variant: str = "fcn2s", version: str = "1.1.0") -> list[list[str]]:
  """The four commands, as arguments after ``python``: training set, test set, training, export."""
  data, test_data, run_dir = (os.path.join(work_dir, name) for name in ("mosaic", "mosaic_test", "default"))
  return [
    _command("model.make_dataset", out=data, seed="1", train="2000", val="100", test="0", size="128"),
    _command("model.make_dataset", out=test_data, seed="2", train="0", val="0", test="200", size="128"),
    _command(
      "model.train",
      data=data,
      out=run_dir,
      variant=variant,
      encoder="compact",
      upsampling="bilinear",
      image_size="128",
      batch_size="16",
      epochs="30",
      learning_rate="2e-3",
      normalization="fixed",
      verbose="2",
    ),
    _command(
      "model.export",
      checkpoint=os.path.join(run_dir, "best.keras"),
      out=out_dir,
      name="deconvseg-default",
      version=version,
      evaluate_data=test_data,
      evaluate_split="test",
    ),
  ]


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="model/default", help="exported model directory to write")
  parser.add_argument("--work_dir", default="runs/reproduce", help="where datasets and checkpoints go")
  parser.add_argument(
    "--variant",
    default="fcn2s",
    choices=VARIANTS,
    help="decoder (fcn2s: the bundled v1.1.0; fcn8s: v1.0.0; see docs/MODEL.md, Decoders)",
  )
  parser.add_argument("--version", default="1.1.0", help="version written into the card")
  args = parser.parse_args(argv)
  for command in commands(args.out, args.work_dir, args.variant, args.version):
    print("+ python " + " ".join(shlex.quote(part) for part in command), flush=True)
    subprocess.run([sys.executable] + command, check=True)
