"""The CPU engines measured alone, and the OpenVINO loop a user would write; run through ``bench.modes`` (its ``MODES`` table).

* ``engine_ceiling``: one engine and precision on pre-decoded uint8 arrays
  (decode excluded), each batch size compiled or traced by one untimed call
  first, then one timed pass over the same arrays per batch size. OpenVINO
  runs through the product's own ``model.engines.load`` (static shapes, the
  precision hint), so the figure is the ceiling of what the pipeline calls;
  TensorFlow runs ``serving_default``; ONNX Runtime runs the ``.onnx`` that
  ``onnx_export`` wrote. Only the runtime measured is imported, and the
  result says whether TensorFlow got imported. The TensorFlow run writes its
  class ids as the reference; the others report their agreement with it.
* ``openvino_loop``: the per-image loop of ``bench.modes.loop`` on OpenVINO,
  written as a user would from OpenVINO's documentation, without the
  project's engine code: the IR compiled once with the CPU plugin's default
  configuration (it picks the precision), batch 1, Pillow in and out.
* ``onnx_export``: ``serving_default`` to ONNX with tf2onnx. The signature
  wraps the network in an empty-batch conditional whose branch reads the
  variables, which tf2onnx's own freezing leaves without shapes; freezing
  with the control flow lowered first gives it a plain graph.
"""

import json
import os
import sys
import time

import numpy as np

from bench.models import read_card


def image_names(folder, limit=None):
  """The folder's file names in order, the first ``limit`` of them when given."""
  names = sorted(os.listdir(folder))
  return names[:limit] if limit else names


def _arrays(folder, count):
  """``count`` decoded RGB arrays from the folder's images in name order, cycling when it has fewer."""
  from PIL import Image

  names = image_names(folder)[:count]
  decoded = [np.asarray(Image.open(os.path.join(folder, name)).convert("RGB")) for name in names]
  return [decoded[i % len(decoded)] for i in range(count)], [names[i % len(names)] for i in range(count)]


def _tensorflow(args):
  import tensorflow as tf

  serve = tf.saved_model.load(os.path.join(args["model"], "saved_model")).signatures["serving_default"]

  def predict(batch):
    out = serve(images=tf.constant(batch))
    return out["class_ids"].numpy(), out["confidence"].numpy()

  return predict, {"runtime": f"TensorFlow {tf.__version__}", "signature": "serving_default"}


def _openvino(args):
  from model import engines
  from model.engines.choice import EngineChoice
  from transforms.imaging.input_spec import InputSpec

  spec = InputSpec.from_card(read_card(args["model"]))
  segmenter = engines.load(
    args["model"], EngineChoice("openvino", args["precision"]), spec, int(args.get("threads", 0))
  )
  return segmenter.predict, segmenter.describe()


def _onnxruntime(args):
  import onnxruntime

  session = onnxruntime.InferenceSession(args["onnx"], providers=["CPUExecutionProvider"])
  name = session.get_inputs()[0].name
  # class_ids first: the uint8 output.
  outputs = [o.name for o in sorted(session.get_outputs(), key=lambda o: o.type != "tensor(uint8)")]

  def predict(batch):
    class_ids, confidence = session.run(outputs, {name: batch})
    return class_ids, confidence

  return predict, {"runtime": f"ONNX Runtime {onnxruntime.__version__}", "provider": "CPUExecutionProvider"}


RUNTIMES = {"tensorflow": _tensorflow, "openvino": _openvino, "onnxruntime": _onnxruntime}


def engine_ceiling(args):
  """images/s per batch size for one engine and precision, and class-id agreement with TensorFlow fp32."""
  count = int(args.get("count", 48))
  sizes = [int(b) for b in args.get("batch_sizes", [1, 8, 16])]
  arrays, names = _arrays(args["images"], count)
  started = time.perf_counter()
  predict, described = RUNTIMES[args["engine"]](args)
  load_s = time.perf_counter() - started
  rates, first_call_s = {}, {}
  images = pixels = 0
  work_s = 0.0
  class_ids = None
  for batch_size in sizes:
    batches = [np.stack(arrays[s : s + batch_size]) for s in range(0, count - batch_size + 1, batch_size)]
    started = time.perf_counter()
    predict(batches[0])  # compiles (OpenVINO static shape) or traces this shape; not timed
    first_call_s[str(batch_size)] = round(time.perf_counter() - started, 3)
    outputs = []
    started = time.perf_counter()
    for batch in batches:
      outputs.append(predict(batch)[0])
    seconds = time.perf_counter() - started
    done = sum(batch.shape[0] for batch in batches)
    rates[str(batch_size)] = round(done / seconds, 3)
    # The record's own rate is the largest batch size's; every size's is in batch_images_per_s.
    images, work_s = done, seconds
    pixels = sum(int(np.prod(batch.shape[:3])) for batch in batches)
    class_ids = np.concatenate(outputs)
  result = {
    "images": images,
    "pixels": pixels,
    "work_s": work_s,
    "load_s": load_s,
    "engine": args["engine"],
    "precision": args.get("precision", "fp32"),
    "batch_images_per_s": rates,
    "first_call_s": first_call_s,
    "image_shape": list(arrays[0].shape),
    "described": {k: str(v) for k, v in described.items()},
    "tensorflow_imported": "tensorflow" in sys.modules,
  }
  result.update(_agreement(args.get("reference"), args["engine"], names[: len(class_ids)], class_ids))
  return result


def _agreement(reference, engine, names, class_ids):
  """The TensorFlow run writes the reference class ids; every other run compares against them."""
  if not reference:
    return {"agreement": None, "agreement_note": "no reference given"}
  if engine == "tensorflow":
    np.savez(reference, names=np.array(names), class_ids=class_ids)
    return {"agreement": 1.0, "agreement_note": "the reference"}
  if not os.path.exists(reference):
    return {"agreement": None, "agreement_note": "the TensorFlow fp32 reference was not written"}
  with np.load(reference) as saved:
    if list(saved["names"]) != list(names) or saved["class_ids"].shape != class_ids.shape:
      return {"agreement": None, "agreement_note": "the reference holds other images"}
    same = np.count_nonzero(saved["class_ids"] == class_ids)
  return {"agreement": round(same / class_ids.size, 6), "agreement_note": f"vs tensorflow fp32, {len(names)} images"}


def openvino_loop(args):
  """Per image: Pillow decode, the IR compiled once with CPU defaults, batch 1, palette PNG + counts.

  ``inference_precision`` ("f32", "bf16") overrides the CPU's default arithmetic, which is bf16 where the CPU has
  bf16 instructions: a check that compares masks pixel for pixel pins f32.
  """
  import openvino

  started = time.perf_counter()
  core = openvino.Core()
  config = {"INFERENCE_PRECISION_HINT": args["inference_precision"]} if args.get("inference_precision") else {}
  compiled = core.compile_model(core.read_model(args["ir"]), "CPU", config)
  request = compiled.create_infer_request()
  class_output = compiled.output("class_ids")
  load_s = time.perf_counter() - started
  images, pixels, work_s = mask_loop(args, lambda rgb: request.infer({0: rgb[None]})[class_output][0])
  return {
    "images": images,
    "pixels": pixels,
    "work_s": work_s,
    "load_s": load_s,
    "runtime": f"OpenVINO {openvino.get_version()}",
    "execution_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
  }


def mask_loop(args, infer):
  """The timed part of both per-image loops: Pillow decode, ``infer(rgb)`` -> [H, W] class ids, palette PNG + counts.

  Returns (images, pixels, work_s); the card, the output folder and the image list are read before the clock starts.
  """
  from PIL import Image

  classes = read_card(args["model"])["classes"]
  palette = [value for entry in classes for value in entry["color"]]
  os.makedirs(args["output"], exist_ok=True)
  names = image_names(args["images"], args.get("limit"))
  images = pixels = 0
  started = time.perf_counter()
  with open(os.path.join(args["output"], "stats.jsonl"), "w") as stats:
    for name in names:
      rgb = np.asarray(Image.open(os.path.join(args["images"], name)).convert("RGB"))
      class_ids = infer(rgb)
      mask = Image.fromarray(class_ids, "P")
      mask.putpalette(palette)
      mask.save(os.path.join(args["output"], name + ".png"))
      counts = np.bincount(class_ids.ravel(), minlength=len(classes))
      stats.write(json.dumps({"key": name, "pixels": counts.tolist()}) + "\n")
      images += 1
      pixels += class_ids.size
  return images, pixels, time.perf_counter() - started


def onnx_export(args):
  """Writes ``args["onnx"]`` from the model's ``serving_default`` (atomically: a reader never sees half a file)."""
  import tensorflow as tf
  import tf2onnx
  from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

  started = time.perf_counter()
  module = tf.saved_model.load(os.path.join(args["model"], "saved_model"))  # holds the signature's variables
  frozen = convert_variables_to_constants_v2(module.signatures["serving_default"], lower_control_flow=True)
  # Flattened structured outputs come in key order: class_ids, then confidence.
  outputs = [tensor.name for tensor in frozen.outputs]
  staging = args["onnx"] + ".partial"
  tf2onnx.convert.from_graph_def(
    frozen.graph.as_graph_def(),
    input_names=[tensor.name for tensor in frozen.inputs],
    output_names=outputs,
    opset=int(args.get("opset", 17)),
    output_path=staging,
  )
  os.replace(staging, args["onnx"])
  return {
    "images": 0,
    "work_s": time.perf_counter() - started,
    "onnx": args["onnx"],
    "converter": f"tf2onnx {tf2onnx.__version__} (TensorFlow {tf.__version__}), opset {args.get('opset', 17)}",
  }
