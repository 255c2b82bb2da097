"""The CPU engines alone and the end-to-end comparison, as ``bench.run`` runs them.

Engines: TensorFlow fp32 first (its class ids are the reference every other
row's agreement is measured against), then OpenVINO fp32, bf16 and int8
through the product's engine code, then ONNX Runtime on a tf2onnx export.
A row the machine or the model cannot run (no bf16 instructions, no int8
IR, a failed conversion) is kept with the reason instead of a number, so
the report shows what was not measured and why.

End to end: the pipeline with its default flags, the TensorFlow loop, the
``tf.data`` script and the OpenVINO loop, one after another on the same
JPEGs, each in a fresh process whose wall time (process start to exit) is
what the ratios compare.
"""

import json
import os
import shutil
import sys

from bench import workload
from bench.procs import REPO, child_env, run_watched

BASELINES = (("TF loop", "loop"), ("tf.data", "tfdata"), ("OpenVINO loop", "openvino_loop"))


def _last_line(text):
  lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
  return lines[-1][:300] if lines else "no message"


def auto_precision(model_dir):
  """The precision ``--engine openvino --precision auto`` resolves to here (None without OpenVINO)."""
  from model import engines

  try:
    return engines.choose_here(model_dir, "openvino", "auto").precision
  except engines.EngineError:
    return None


def export_onnx(bench, model_dir, workdir):
  """(path of the cached ``.onnx``, None) or (None, the conversion's error line)."""
  from model.engines.openvino_ir import saved_model_hash

  path = os.path.join(workdir, "onnx", saved_model_hash(model_dir)[:24] + ".onnx")
  if os.path.exists(path):
    return path, None
  os.makedirs(os.path.dirname(path), exist_ok=True)
  bench.say("onnx export ...")
  args = {"model": model_dir, "onnx": path}
  watched = run_watched(
    [sys.executable, "-m", "bench.modes", "onnx_export", json.dumps(args)], env=child_env(), cwd=REPO
  )
  if watched["returncode"] != 0 or not os.path.exists(path):
    error = _last_line(watched["stderr_tail"])
    bench.say(f"onnx export failed: {error}")
    return None, error
  bench.say(f"onnx export: {watched['wall_s']:.1f} s")
  return path, None


def plan(model_dir):
  """(engine, precision, reason it cannot run here or None), in measurement order."""
  from model.engines import cpu
  from model.engines.choice import openvino_installed
  from model.engines.openvino_ir import ir_path

  features = cpu.probe()
  no_openvino = None if openvino_installed() else "the openvino package is not installed"
  int8_ir = ir_path(model_dir, int8=True)
  return [
    ("tensorflow", "fp32", None),
    ("openvino", "fp32", no_openvino),
    (
      "openvino",
      "bf16",
      no_openvino
      or (None if features.bf16 else f"the CPU ({features.name}) has no bf16 instructions (AMX or AVX-512 BF16)"),
    ),
    ("openvino", "int8", no_openvino or (None if os.path.exists(int8_ir) else f"no int8 IR at {int8_ir}")),
    ("onnxruntime", "fp32", None),
  ]


def engine_ceilings(bench, label, model_dir, images_dir, workdir, count, batch_sizes, image_set):
  """One row per engine and precision: images/s by batch size and agreement, or why there is no number."""
  reference = os.path.join(workdir, f"engine-reference-{label}.npz")
  if os.path.exists(reference):
    os.remove(reference)  # a stale reference would compare against other arrays
  auto = auto_precision(model_dir)
  rows = []
  for engine, precision, skipped in plan(model_dir):
    row = {"engine": engine, "precision": precision, "model": label, "auto": engine == "openvino" and precision == auto}
    args = {
      "model": model_dir,
      "images": images_dir,
      "engine": engine,
      "precision": precision,
      "count": count,
      "batch_sizes": list(batch_sizes),
      "reference": reference,
    }
    if skipped:
      row.update(status="skipped", reason=skipped)
      bench.say(f"engine ceiling[{engine} {precision}]: skipped: {skipped}")
      rows.append(row)
      continue
    if engine == "onnxruntime":
      args["onnx"], error = export_onnx(bench, model_dir, workdir)
      if error:
        row.update(status="failed", reason=f"tf2onnx conversion failed: {error}")
        rows.append(row)
        continue
    try:
      record = bench.mode(
        f"engine ceiling[{label}, {engine} {precision}]",
        "engine_ceiling",
        args,
        mode="engine_ceiling",
        model=label,
        set=image_set,
        engine=engine,
        precision=precision,
      )
    except RuntimeError as exc:
      row.update(status="failed", reason=_last_line(str(exc)))
      rows.append(row)
      continue
    detail = record["detail"]
    row.update(
      status="measured",
      run=record["name"],
      batch_images_per_s=detail["batch_images_per_s"],
      agreement=detail.get("agreement"),
      agreement_note=detail.get("agreement_note"),
      first_call_s=detail.get("first_call_s"),
      tensorflow_imported=detail.get("tensorflow_imported"),
      peak_rss_mb=record["peak_rss_mb"],
    )
    rows.append(row)
  return rows


def end_to_end(bench, jpeg_dir, count, model_dir, workdir, size):
  """The pipeline and the three baselines on the first ``count`` JPEGs; wall-time ratios (above 1: pipeline faster)."""
  from model.engines.openvino_ir import locate_ir

  images_dir = workload.subset(jpeg_dir, count, os.path.join(workdir, f"e2e{count}"))
  labels = {"mode": "e2e", "model": "default", "set": f"{count} x {size}^2 JPEG"}
  out = os.path.join(workdir, "out")
  pipeline = bench.pipeline(
    f"e2e pipeline[{count}]",
    images_dir,
    os.path.join(out, f"e2e-pipeline-{count}"),
    model_dir,
    pattern="*.jpg",
    defaults=True,
    role="pipeline",
    **labels,
  )
  row = {"images": count, "pipeline": _figures(pipeline), "baselines": {}, "wall_ratio": {}, "timed_ratio": {}}
  for title, program in BASELINES:
    output = os.path.join(out, f"e2e-{program}-{count}")
    shutil.rmtree(output, ignore_errors=True)
    args = {"model": model_dir, "images": images_dir, "output": output}
    if program == "openvino_loop":
      args["ir"] = locate_ir(model_dir)[0]
    run = bench.mode(f"e2e {title}[{count}]", program, args, role=program, **labels)
    row["baselines"][title] = _figures(run)
    row["wall_ratio"][title] = round(run["wall_s"] / pipeline["wall_s"], 3)
    row["timed_ratio"][title] = round(run["work_s"] / pipeline["work_s"], 3)
  return row


def _figures(run):
  return {
    "run": run["name"],
    "wall_s": run["wall_s"],
    "work_s": run["work_s"],
    "wall_images_per_s": run.get("wall_images_per_s"),
    "masks": run.get("masks"),
    "peak_rss_mb": run["peak_rss_mb"],
    "engine": _engine_name(run["detail"]),
  }


def _engine_name(detail):
  """'openvino fp32' for a pipeline run (its summary's engine block), else the program's runtime."""
  engine = detail.get("engine")
  if isinstance(engine, dict):
    return f"{engine.get('engine')} {engine.get('precision')}"
  return detail.get("runtime")


def short_run(bench, jpeg_dir, count, model_dir, workdir, size):
  """The pipeline on a handful of JPEGs, default flags: what a first try costs, process start included."""
  images_dir = workload.subset(jpeg_dir, count, os.path.join(workdir, f"e2e{count}"))
  return bench.pipeline(
    f"pipeline, {count} images",
    images_dir,
    os.path.join(workdir, "out", f"short-{count}"),
    model_dir,
    pattern="*.jpg",
    defaults=True,
    mode="short",
    model="default",
    set=f"{count} x {size}^2 JPEG",
  )
