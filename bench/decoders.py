"""What each decoder costs on the CPU engine: FCN-8s, the finer FCN-4s/2s and the full deconvolution decoder.

    python -m bench.decoders --out runs/decoder_speed          # prints a table, writes decoders.json

Each variant is built at the bundled model's size (compact encoder, width
32), exported through ``model.export`` (SavedModel and OpenVINO IR, as a
trained model would be) and timed on the OpenVINO engine at fp32 on
``--size`` squared images in batches of ``--batch``. Untrained weights cost
the same as trained ones; the quality side of the comparison is
``python -m model.ablation --variants ...``. The per-pixel
multiply-accumulates come from ``model.network.cost``.
"""

import argparse
import json
import os
import time

import numpy as np

VARIANTS = ("fcn8s", "fcn4s", "fcn2s", "deconvnet")


def export_variant(folder: str, variant: str, num_classes: int = 5, width: int = 32):
  """(model dir, parameters, MACs per pixel) of an untrained variant, exported like a trained one."""
  from model.artifact.export import export
  from model.network.cost import macs_per_pixel
  from model.network.fcn import build_fcn

  model_dir = os.path.join(folder, variant)
  keras_path = os.path.join(folder, f"{variant}.keras")
  model = build_fcn(num_classes, variant=variant, width=width)
  parameters, macs = int(model.count_params()), macs_per_pixel(model)
  if not os.path.exists(os.path.join(model_dir, "card.json")):
    os.makedirs(folder, exist_ok=True)
    model.save(keras_path)
    run_json = os.path.join(folder, f"{variant}_run.json")
    with open(run_json, "w") as handle:
      json.dump(
        {
          "settings": {"variant": variant, "encoder": "compact", "width": width},
          "dataset": {"name": "untrained"},
          "classes": [{"id": i, "name": f"class_{i}"} for i in range(num_classes)],
        },
        handle,
      )
    export(keras_path, model_dir, name=f"bench-{variant}", version="0.0.0", run_json=run_json)
  return model_dir, parameters, macs


def time_variant(model_dir: str, size: int, batch: int, batches: int, threads: int = 0) -> dict:
  """images/s of the exported model on OpenVINO fp32, after one untimed call that compiles the shape."""
  from model import engines
  from model.engines.choice import EngineChoice
  from model.engines.openvino_ir import read_card
  from transforms.imaging.input_spec import InputSpec

  segmenter = engines.load(
    model_dir, EngineChoice("openvino", "fp32"), InputSpec.from_card(read_card(model_dir)), threads
  )
  images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
  segmenter.predict(images)
  started = time.perf_counter()
  for _ in range(batches):
    segmenter.predict(images)
  seconds = time.perf_counter() - started
  return {
    "images_per_s": round(batch * batches / seconds, 2),
    "ms_per_image": round(1000 * seconds / (batch * batches), 1),
  }


def run(args) -> list:
  rows = []
  for variant in args.variants:
    model_dir, parameters, macs = export_variant(os.path.join(args.out, "models"), variant)
    timing = time_variant(model_dir, args.size, args.batch, args.batches, args.threads)
    rows.append({"variant": variant, "parameters": parameters, "macs_per_pixel": round(macs), **timing})
    print(json.dumps(rows[-1]), flush=True)
  base = next((row for row in rows if row["variant"] == "fcn8s"), rows[0])
  for row in rows:
    row["cost_vs_fcn8s"] = round(base["images_per_s"] / row["images_per_s"], 3)
    row["macs_vs_fcn8s"] = round(row["macs_per_pixel"] / base["macs_per_pixel"], 3)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "decoders.json"), "w") as handle:
    json.dump({"size": args.size, "batch": args.batch, "rows": rows}, handle, indent=2)
  print(
    f"| variant | parameters | MACs per pixel | x FCN-8s | images/s ({args.size}², OpenVINO fp32) | time x FCN-8s |"
  )
  print("|---|---|---|---|---|---|")
  for row in rows:
    print(
      f"| {row['variant']} | {row['parameters']:,} | {row['macs_per_pixel']:,} | {row['macs_vs_fcn8s']:.2f} | "
      f"{row['images_per_s']:.2f} | {row['cost_vs_fcn8s']:.2f} |"
    )
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="runs/decoder_speed")
  parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--batches", type=int, default=6)
  parser.add_argument("--threads", type=int, default=0, help="OpenVINO inference threads (0: all cores)")
  return run(parser.parse_args(argv))


if __name__ == "__main__":
  main()
