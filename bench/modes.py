"""The measured programs, each run in its own process: ``python -m bench.modes MODE JSON_ARGS``.

Each prints one JSON line (its last line of stdout) with ``images``,
``work_s`` (the timed part) and mode-specific fields. A fresh process per
measurement keeps peak-RSS figures and TensorFlow thread settings separate.

* ``ceiling``: the exported model alone on pre-decoded, pre-batched uint8
  arrays (``loaded.segment``, outputs fetched to numpy), one warm-up call.
* ``naive``: what a user writes by hand: PIL decode, Keras ``model.predict``
  on the ``.keras`` model, argmax, palette-free PNG per image.
* ``stock``: Beam's ``RunInference`` + ``TFModelHandlerNumpy`` on the ``.keras``
  model, images resized to a fixed square and masks resized back (nearest).
* ``xla``: ``tf.function`` over the Keras model with ``jit_compile`` on/off.
* ``loop``: the careful per-image loop a competent user writes: PIL decode,
  the exported ``serving_default`` signature at batch 1 (argmax on the
  device), a palette PNG mask and a per-class pixel-count line per image.
* ``tfdata``: the same outputs from a ``tf.data`` pipeline: parallel
  read + decode, batches of 16, ``serving_default``, per-image bincount and
  ``encode_png`` in the graph, files written with ``tf.io.write_file``.
* ``engine_ceiling``, ``openvino_loop``, ``onnx_export``: the CPU engines,
  in ``bench.engine_modes``.
"""

import json
import os
import sys
import time

import numpy as np

from bench.engine_modes import engine_ceiling, image_names, mask_loop, onnx_export, openvino_loop
from bench.models import read_card


def _batches(arrays, batch_size):
  by_shape = {}
  for array in arrays:
    by_shape.setdefault(array.shape, []).append(array)
  batches = []
  for group in by_shape.values():
    for start in range(0, len(group), batch_size):
      batches.append(np.stack(group[start : start + batch_size]))
  return batches


def _configure_threads(args):
  import tensorflow as tf

  if args.get("intra_op_threads"):
    tf.config.threading.set_intra_op_parallelism_threads(int(args["intra_op_threads"]))
  if args.get("inter_op_threads"):
    tf.config.threading.set_inter_op_parallelism_threads(int(args["inter_op_threads"]))
  return tf


def _timed_loop(module, batches):
  started = time.perf_counter()
  images = pixels = 0
  for batch in batches:
    out = module.segment(batch)
    out["class_ids"].numpy()
    out["confidence"].numpy()
    images += batch.shape[0]
    pixels += batch.shape[0] * batch.shape[1] * batch.shape[2]
  return images, pixels, time.perf_counter() - started


def ceiling(args):
  """Best batch size first (a short sweep), then the whole set at that batch size."""
  from PIL import Image

  tf = _configure_threads(args)
  started = time.perf_counter()
  module = tf.saved_model.load(os.path.join(args["model"], "saved_model"))
  load_s = time.perf_counter() - started
  names = image_names(args["images"], args.get("limit"))
  arrays = [np.asarray(Image.open(os.path.join(args["images"], name)).convert("RGB")) for name in names]
  sizes = [int(b) for b in args.get("batch_sizes", [args.get("batch_size", 8)])]
  sweep = {}
  if len(sizes) > 1:
    sample = arrays[: int(args.get("sweep_images", 32))]
    for batch_size in sizes:
      batches = _batches(sample, batch_size)
      module.segment(batches[0])  # warm-up at this shape
      images, _, seconds = _timed_loop(module, batches)
      sweep[batch_size] = round(images / seconds, 3)
  best = max(sweep, key=sweep.get) if sweep else sizes[0]
  batches = _batches(arrays, best)
  del arrays
  module.segment(batches[0][:1])  # warm-up: first call initialises kernels
  module.segment(batches[0])
  images, pixels, work_s = _timed_loop(module, batches)
  return {
    "images": images,
    "pixels": pixels,
    "work_s": work_s,
    "load_s": load_s,
    "batch_size": best,
    "batch_sweep_images_per_s": sweep,
  }


def xla(args):
  import keras

  import model.network.layers  # noqa: F401

  tf = _configure_threads(args)
  network = keras.models.load_model(args["keras"], compile=False)

  def segment(images):
    logits = network(tf.cast(images, tf.float32), training=False)
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    return tf.cast(tf.argmax(probabilities, axis=-1), tf.uint8), tf.reduce_max(probabilities, axis=-1)

  function = tf.function(segment, jit_compile=bool(args["jit_compile"]))
  size, batch_size = int(args.get("size", 512)), int(args.get("batch_size", 8))
  batch = np.random.default_rng(0).integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
  started = time.perf_counter()
  [t.numpy() for t in function(batch)]
  first_s = time.perf_counter() - started
  images = 0
  started = time.perf_counter()
  for _ in range(int(args.get("calls", 5))):
    [t.numpy() for t in function(batch)]
    images += batch_size
  work_s = time.perf_counter() - started
  return {"images": images, "pixels": images * size * size, "work_s": work_s, "first_call_s": first_s}


def naive(args):
  import keras
  from PIL import Image

  import model.network.layers  # noqa: F401

  started = time.perf_counter()
  network = keras.models.load_model(args["keras"], compile=False)
  load_s = time.perf_counter() - started
  os.makedirs(args["output"], exist_ok=True)
  names = image_names(args["images"], args.get("limit"))
  images = pixels = 0
  started = time.perf_counter()
  for name in names:
    pixels_in = np.asarray(Image.open(os.path.join(args["images"], name)).convert("RGB"))
    logits = network.predict(pixels_in[None].astype(np.float32), verbose=0)
    mask = np.argmax(logits[0], axis=-1).astype(np.uint8)
    Image.fromarray(mask).save(os.path.join(args["output"], name + ".png"))  # pipeline naming: key + .png
    images += 1
    pixels += mask.size
  work_s = time.perf_counter() - started
  return {"images": images, "pixels": pixels, "work_s": work_s, "load_s": load_s}


def _stock_handler(args):
  """Beam's TFModelHandlerNumpy if tensorflow_hub imports, else the same behaviour without it."""
  try:
    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

    return TFModelHandlerNumpy(
      args["keras"], min_batch_size=1, max_batch_size=int(args.get("batch_size", 8))
    ), "TFModelHandlerNumpy"
  except ImportError as exc:
    if args.get("require_stock"):
      raise
    from apache_beam.ml.inference import utils
    from apache_beam.ml.inference.base import ModelHandler

    class KerasNumpyHandler(ModelHandler):
      """TFModelHandlerNumpy's load (keras load_model) and inference (model(np.stack(batch)))."""

      def load_model(self):
        import keras

        return keras.models.load_model(args["keras"])

      def run_inference(self, batch, model, inference_args=None):
        return utils._convert_to_result(batch, model(np.stack(batch, axis=0)))

      def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": int(args.get("batch_size", 8))}

    return KerasNumpyHandler(), f"ModelHandler equivalent (tensorflow_hub not importable: {exc})"


def stock(args):
  import apache_beam as beam
  from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
  from apache_beam.options.pipeline_options import PipelineOptions
  from PIL import Image

  import model.network.layers  # noqa: F401

  size = int(args.get("size", 512))
  folder, output = args["images"], args["output"]
  names = image_names(folder, args.get("limit"))
  handler, handler_name = _stock_handler(args)

  def preprocess(name):
    with Image.open(os.path.join(folder, name)) as image:
      image = image.convert("RGB")
      original = image.size
      if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
      return (name, original), np.asarray(image, dtype=np.float32)

  def write(keyed):
    (name, original), result = keyed
    mask = Image.fromarray(np.argmax(np.asarray(result.inference), axis=-1).astype(np.uint8))
    if mask.size != original:
      mask = mask.resize(original, Image.NEAREST)
    mask.save(os.path.join(output, name + ".png"))
    counts = np.bincount(np.asarray(mask).ravel(), minlength=5)
    return json.dumps({"key": name, "class_pixels": counts.tolist()})

  os.makedirs(output, exist_ok=True)
  started = time.perf_counter()
  options = PipelineOptions(["--runner=FnApiRunner"])
  with beam.Pipeline(options=options) as pipeline:
    _ = (
      pipeline
      | "Names" >> beam.Create(names)
      | "Reshuffle" >> beam.Reshuffle()
      | "DecodeResize" >> beam.Map(preprocess)
      | "RunInference" >> RunInference(KeyedModelHandler(handler))
      | "ArgmaxResizeWrite" >> beam.Map(write)
      | "Stats" >> beam.io.WriteToText(os.path.join(output, "stats"), file_name_suffix=".jsonl")
    )
  work_s = time.perf_counter() - started
  pixels = sum(int(np.prod(Image.open(os.path.join(folder, n)).size)) for n in names)
  return {"images": len(names), "pixels": pixels, "work_s": work_s, "handler": handler_name, "size": size}


def loop(args):
  """Per image: decode, serving_default (batch 1), palette PNG + counts; the model loaded once."""

  tf = _configure_threads(args)
  started = time.perf_counter()
  serve = tf.saved_model.load(os.path.join(args["model"], "saved_model")).signatures["serving_default"]
  load_s = time.perf_counter() - started
  images, pixels, work_s = mask_loop(args, lambda rgb: serve(images=tf.constant(rgb[None]))["class_ids"].numpy()[0])
  return {"images": images, "pixels": pixels, "work_s": work_s, "load_s": load_s}


def tfdata(args):
  """tf.data: parallel read + decode, batch, serving_default, bincount and encode_png in the graph."""
  tf = _configure_threads(args)
  started = time.perf_counter()
  serve = tf.saved_model.load(os.path.join(args["model"], "saved_model")).signatures["serving_default"]
  load_s = time.perf_counter() - started
  num_classes = len(read_card(args["model"])["classes"])
  os.makedirs(args["output"], exist_ok=True)
  names = image_names(args["images"], args.get("limit"))
  paths = [os.path.join(args["images"], name) for name in names]
  autotune = tf.data.AUTOTUNE

  def decode(path):
    return path, tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)

  def encode(name, class_ids):
    counts = tf.math.bincount(tf.cast(tf.reshape(class_ids, [-1]), tf.int32), minlength=num_classes)
    return name, tf.io.encode_png(class_ids[..., None]), counts

  dataset = (
    tf.data.Dataset.from_tensor_slices(paths)
    .map(decode, num_parallel_calls=autotune)
    .batch(int(args.get("batch_size", 16)))
    .prefetch(autotune)
  )
  images = pixels = 0
  started = time.perf_counter()
  with open(os.path.join(args["output"], "stats.jsonl"), "w") as stats:
    for batch_paths, batch in dataset:
      class_ids = serve(images=batch)["class_ids"]
      encoded = tf.data.Dataset.from_tensor_slices((batch_paths, class_ids)).map(encode, num_parallel_calls=autotune)
      for path, png, counts in encoded:
        name = os.path.basename(path.numpy().decode())
        tf.io.write_file(os.path.join(args["output"], name + ".png"), png)
        stats.write(json.dumps({"key": name, "pixels": counts.numpy().tolist()}) + "\n")
      images += int(batch.shape[0])
      pixels += int(batch.shape[0] * batch.shape[1] * batch.shape[2])
  work_s = time.perf_counter() - started
  return {"images": images, "pixels": pixels, "work_s": work_s, "load_s": load_s}


MODES = {
  "ceiling": ceiling,
  "naive": naive,
  "stock": stock,
  "xla": xla,
  "loop": loop,
  "tfdata": tfdata,
  "engine_ceiling": engine_ceiling,
  "openvino_loop": openvino_loop,
  "onnx_export": onnx_export,
}


def main(argv):
  mode, args = argv[0], json.loads(argv[1])
  result = MODES[mode](args)
  with open("/proc/self/status") as handle:
    for line in handle:
      if line.startswith("VmHWM:"):
        result["self_peak_rss_mb"] = int(line.split()[1]) / 1024
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
