"""The bundled network's ceiling on an accelerator: images/s by precision, batch and image size.

    python -m bench.gpu_ceiling prepare --out bench_gpu      # here: weights + probe images + CPU answers
    KERAS_BACKEND=jax python -m bench.gpu_ceiling measure --inputs bench_gpu --out cells_jax.json
    python -m bench.gpu_ceiling table cells_*.json --out docs/PERFORMANCE_GPU.md --section

``prepare`` needs TensorFlow: it copies the bundled SavedModel's weights into
an ``.npz`` (in ``model.weights`` order) and records the SavedModel's own
class ids for a few probe images. ``measure`` needs only Keras and one
backend, so the same network runs where TensorFlow cannot be installed (a
machine with only JAX or PyTorch for its CUDA): it rebuilds the architecture
from the card under each dtype policy, loads the weights, and times what the
pipeline's inference step does per batch: uint8 pixels to the device,
network, argmax, max-softmax and per-class pixel counts and confidence
sums on the device, uint8 ids and the sums back to the host
(``--fetch_confidence_map`` fetches the float32 map instead). The probe
answers give each cell's pixel agreement with the exported model on CPU,
so a fast cell that computes something else shows up. Weights do not change speed; they make the
agreement check possible.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from bench.models import DEFAULT_MODEL, card_network, network_from_saved_model, read_card

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
PROBE_SHAPE = (4, 256, 320, 3)


def prepare(args):
  """Weights, card and probe answers of an exported model, for ``measure`` on another machine."""
  card = read_card(args.model)
  network, loaded = network_from_saved_model(args.model)
  probe = np.random.default_rng(0).integers(0, 256, PROBE_SHAPE[:3] + (card["input"]["channels"],), dtype=np.uint8)
  os.makedirs(args.out, exist_ok=True)
  np.savez(os.path.join(args.out, "weights.npz"), *network.get_weights())
  np.savez(os.path.join(args.out, "probe.npz"), images=probe, class_ids=loaded.segment(probe)["class_ids"].numpy())
  with open(os.path.join(args.out, "card.json"), "w") as handle:
    json.dump(card, handle, indent=2)
  print(f"wrote {args.out}: {len(network.weights)} weight arrays, {probe.shape[0]} probe images")


def _segmenter(keras, card, weights, jit_compile, reduce_on_device=True):
  """The pipeline's per-batch work as one Keras model: uint8 in, uint8 ids and float32 confidence out."""
  from keras import ops

  network = card_network(card)
  network.set_weights(weights)

  class Segmenter(keras.Model):
    def __init__(self, net):
      super().__init__()
      self.net = net

    def call(self, images):
      logits = ops.cast(self.net(ops.cast(images, "float32"), training=False), "float32")
      class_ids = ops.argmax(logits, axis=-1)
      confidence = ops.max(ops.softmax(logits, axis=-1), axis=-1)
      if not reduce_on_device:
        return ops.cast(class_ids, "uint8"), confidence
      # As transforms/inference.py does: the confidence map stays on the device, per-class sums come back.
      one_hot = ops.one_hot(class_ids, num_classes, dtype="float32")
      pixels = ops.sum(one_hot, axis=(1, 2))
      confidence_sums = ops.sum(one_hot * confidence[..., None], axis=(1, 2))
      return ops.cast(class_ids, "uint8"), pixels, confidence_sums

  num_classes = len(card["classes"])
  model = Segmenter(network)
  model.compile(jit_compile=jit_compile)
  return model


def _time_cell(model, batch, min_seconds, min_batches):
  started = time.perf_counter()
  model.predict_on_batch(batch)  # builds and compiles for this shape
  compile_s = time.perf_counter() - started
  model.predict_on_batch(batch)
  runs = 0
  started = time.perf_counter()
  while runs < min_batches or time.perf_counter() - started < min_seconds:
    for output in model.predict_on_batch(batch):
      np.asarray(output)
    runs += 1
  seconds = time.perf_counter() - started
  return compile_s, runs * batch.shape[0], seconds


def _resident_runner(keras, model, batch):
  """One step with the batch already on the device and nothing fetched back: the network's own speed.

  The gap to ``_time_cell``'s figure is the host side: the copies in and
  out and Keras' per-call conversions.
  """
  images = keras.ops.convert_to_tensor(batch)
  backend = keras.backend.backend()
  if backend == "jax":
    import jax

    step = jax.jit(lambda trainable, fixed, x: model.stateless_call(trainable, fixed, x)[0])
    trainable = [variable.value for variable in model.trainable_variables]
    fixed = [variable.value for variable in model.non_trainable_variables]
    return lambda: jax.block_until_ready(step(trainable, fixed, images))
  if backend == "torch":
    import torch

    def run():
      with torch.no_grad():
        outputs = model(images)
      torch.cuda.synchronize()
      return outputs

    return run
  import tensorflow as tf

  step = tf.function(lambda x: [tf.reduce_sum(tf.cast(output, tf.float32)) for output in model(x)])
  return lambda: [total.numpy() for total in step(images)]


def _time_resident(run, min_seconds, min_batches, batch_size):
  run()
  run()
  runs = 0
  started = time.perf_counter()
  while runs < min_batches or time.perf_counter() - started < min_seconds:
    run()
    runs += 1
  return runs * batch_size / (time.perf_counter() - started)


def _device_name(backend):
  try:
    if backend == "torch":
      import torch

      return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    if backend == "jax":
      import jax

      return str(jax.devices()[0].device_kind)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "cpu"
  except Exception as error:
    return f"unknown ({error})"


def measure(args):
  """Every precision x size x batch cell; a failing cell is recorded with its error, the rest still run."""
  import keras

  backend = keras.backend.backend()
  if backend == "tensorflow":
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
      tf.config.experimental.set_memory_growth(gpu, True)
  card = read_card(args.inputs)
  with np.load(os.path.join(args.inputs, "weights.npz")) as archive:
    weights = [archive[f"arr_{index}"] for index in range(len(archive.files))]
  with np.load(os.path.join(args.inputs, "probe.npz")) as archive:
    probe, expected = archive["images"], archive["class_ids"]
  channels = card["input"]["channels"]
  dtype = np.uint16 if card["input"]["dtype"] == "uint16" else np.uint8
  rng = np.random.default_rng(1)
  cells = []
  for precision in args.precisions:
    keras.config.set_dtype_policy(precision)
    try:
      model = _segmenter(keras, card, weights, args.jit_compile, not args.fetch_confidence_map)
      agreement = float(np.mean(np.asarray(model.predict_on_batch(probe)[0]) == expected))
    except Exception as error:
      cells.append({"precision": precision, "error": f"{type(error).__name__}: {error}"[:400]})
      continue
    for size in args.sizes:
      for batch_size in args.batches:
        cell = {"precision": precision, "size": size, "batch": batch_size, "agreement": round(agreement, 5)}
        batch = rng.integers(0, np.iinfo(dtype).max, (batch_size, size, size, channels), dtype=dtype)
        try:
          compile_s, images, seconds = _time_cell(model, batch, args.min_seconds, args.min_batches)
          cell.update(
            compile_s=round(compile_s, 2),
            images=images,
            seconds=round(seconds, 3),
            images_per_s=round(images / seconds, 1),
            megapixels_per_s=round(images * size * size / seconds / 1e6, 1),
          )
          if args.resident:
            rate = _time_resident(_resident_runner(keras, model, batch), args.min_seconds, args.min_batches, batch_size)
            cell["resident_images_per_s"] = round(rate, 1)
        except Exception as error:
          cell["error"] = f"{type(error).__name__}: {error}"[:400]
        print(json.dumps(cell), flush=True)
        cells.append(cell)
  keras.config.set_dtype_policy("float32")
  result = {
    "meta": {
      "backend": backend,
      "keras": keras.__version__,
      "device": _device_name(backend),
      "jit_compile": args.jit_compile,
      "fetch_confidence_map": args.fetch_confidence_map,
      "model": card.get("name"),
      "architecture": card["architecture"],
      "python": platform.python_version(),
      "host": platform.node(),
      "date": time.strftime("%Y-%m-%d"),
      "command": " ".join(["python -m bench.gpu_ceiling", *sys.argv[1:]]),
    },
    "cells": cells,
  }
  with open(args.out, "w") as handle:
    json.dump(result, handle, indent=2)
  print(f"wrote {args.out}")


def _markdown(runs):
  lines = []
  for run in runs:
    meta = run["meta"]
    fetched = "uint8 ids + float32 confidence map" if meta.get("fetch_confidence_map") else "uint8 ids + per-class sums"
    lines += [
      f"### {meta['device']}, Keras {meta['keras']} on {meta['backend']} (jit_compile={meta['jit_compile']}); "
      f"fetched: {fetched}",
      "",
      f"`{meta['command']}` on {meta['date']}",
      "",
      "| precision | size | batch | images/s | megapixels/s | images/s, batch resident on device |"
      " first call (s) | pixels agreeing with CPU SavedModel |",
      "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in run["cells"]:
      if "error" in cell:
        lines.append(
          f"| {cell['precision']} | {cell.get('size', '')} | {cell.get('batch', '')} | failed: "
          f"{cell['error'].splitlines()[0][:120]} | | | | |"
        )
      else:
        lines.append(
          f"| {cell['precision']} | {cell['size']}² | {cell['batch']} | {cell['images_per_s']:,} | "
          f"{cell['megapixels_per_s']:,} | {cell.get('resident_images_per_s', '—')} | {cell['compile_s']} | "
          f"{cell['agreement']:.4f} |"
        )
    lines.append("")
  return "\n".join(lines)


def table(args):
  """All measured runs as one JSON (for ``bench.plan``) and their Markdown tables."""
  runs = []
  for path in args.cells:
    with open(path) as handle:
      runs.append(json.load(handle))
  with open(os.path.splitext(args.out)[0] + ".json", "w") as handle:
    json.dump({"runs": runs}, handle, indent=2)
  text = _markdown(runs)
  if args.out.endswith(".md") and os.path.exists(args.out) and args.section:
    with open(args.out) as handle:
      document = handle.read()
    begin, end = "<!-- gpu-ceiling:begin -->", "<!-- gpu-ceiling:end -->"
    if begin in document and end in document:
      text = document[: document.index(begin) + len(begin)] + "\n" + text + document[document.index(end) :]
  with open(args.out, "w") as handle:
    handle.write(text)
  print(text)


def _ints(text):
  return [int(value) for value in text.split(",") if value]


def _precisions(text):
  values = [value for value in text.split(",") if value]
  unknown = sorted(set(values) - set(PRECISIONS))
  if unknown:
    raise argparse.ArgumentTypeError(f"unknown precision {unknown}; choose from {','.join(PRECISIONS)}")
  return values


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m bench.gpu_ceiling", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  p = commands.add_parser("prepare", help="export weights and probe answers (needs TensorFlow)")
  p.add_argument("--model", default=DEFAULT_MODEL, help="exported model folder (card.json + saved_model/)")
  p.add_argument("--out", required=True)
  p.set_defaults(run=prepare)
  m = commands.add_parser("measure", help="time the network under the current KERAS_BACKEND")
  m.add_argument("--inputs", required=True, help="folder written by 'prepare'")
  m.add_argument("--out", required=True)
  m.add_argument("--precisions", type=_precisions, default=list(PRECISIONS))
  m.add_argument("--sizes", type=_ints, default=[512, 1024])
  m.add_argument("--batches", type=_ints, default=[8, 16, 32])
  m.add_argument("--min_seconds", type=float, default=2.0)
  m.add_argument("--min_batches", type=int, default=5)
  m.add_argument("--jit_compile", default="auto", choices=["auto", "true", "false"])
  m.add_argument(
    "--fetch_confidence_map",
    action="store_true",
    help="fetch the float32 confidence map (the raw contract) instead of per-class sums (the pipeline)",
  )
  m.add_argument(
    "--resident", action="store_true", help="also time the step with the batch on the device and no outputs fetched"
  )
  m.set_defaults(run=measure)
  t = commands.add_parser("table", help="merge measured runs into PERFORMANCE_GPU.json and a Markdown table")
  t.add_argument("cells", nargs="+")
  t.add_argument("--out", required=True)
  t.add_argument("--section", action="store_true", help="replace only the marked section of an existing --out")
  t.set_defaults(run=table)
  args = parser.parse_args(argv)
  if getattr(args, "jit_compile", None) in ("true", "false"):
    args.jit_compile = args.jit_compile == "true"
  args.run(args)


if __name__ == "__main__":
  main()
