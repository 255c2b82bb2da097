"""Orchestrates the benchmark of issue 6 and writes the report.

    python -m bench                              # full run (~10 min on 2 cores), prints JSON + table
    python -m bench --out docs/PERFORMANCE.md    # also writes the Markdown report (results section)
    python -m bench --quick --out /tmp/b.json    # smoke test (tiny workload, a minute)

Every figure comes from a fresh process (``bench.modes`` or ``python -m
pipeline.run``) watched by ``bench.procs`` for wall time and per-process peak
RSS. Ratios are images/s divided by the ceiling's images/s for the same
model and image size. The load average before and after each measurement is
recorded because the machine may be shared.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import sys
import time

from bench import models, quality, workload
from bench import spy as spy_module
from bench.procs import REPO, child_env, load_average, run_watched

PROFILES = {
  # (count of 512^2 images in the main set, linearity base, big images, vgg16 images, settings images)
  "full": {
    "main": 200,
    "linear_base": 20,
    "big": 4,
    "big_size": 4096,
    "vgg": 8,
    "settings": 64,
    "pool": 24,
    "tile_size": 512,
  },
  # Smoke test: every mode on a few small images; no sweep, large images, profile or settings.
  "quick": {"main": 4, "linear_base": 0, "big": 0, "big_size": 0, "vgg": 0, "settings": 0, "pool": 2, "tile_size": 256},
}


class Bench:
  def __init__(self, workdir, quick, log=sys.stderr):
    self.workdir = workdir
    self.profile = PROFILES["quick" if quick else "full"]
    self.quick = quick
    self.log = log
    self.runs = []
    self.pipeline_env = None

  def say(self, message):
    print(f"[bench {time.strftime('%H:%M:%S')} load {load_average()[0]:.2f}] {message}", file=self.log, flush=True)

  def _mode(self, name, program, args, env=None, **labels):
    self.say(f"{name} ...")
    watched = run_watched(
      [sys.executable, "-m", "bench.modes", program, json.dumps(args)], env=env or child_env(), cwd=REPO
    )
    if watched["returncode"] != 0:
      raise RuntimeError(f"{name} failed ({watched['returncode']}):\n{watched['stderr_tail']}")
    result = json.loads(watched["stdout"].strip().splitlines()[-1])
    return self._record(name, result, watched, args.get("output"), **labels)

  def _record(self, name, result, watched, output, **labels):
    record = dict(
      labels,
      name=name,
      images=result.get("images"),
      work_s=round(result["work_s"], 3),
      wall_s=round(watched["wall_s"], 2),
      processes=watched["processes"],
      peak_rss_mb=max((p["peak_rss_mb"] for p in watched["processes"]), default=None),
      load_before=watched["load_before"],
      load_after=watched["load_after"],
      detail={k: v for k, v in result.items() if k not in ("images", "work_s")},
    )
    if result.get("images"):
      record["images_per_s"] = round(result["images"] / result["work_s"], 3)
      record["mpx_per_s"] = round(result["pixels"] / 1e6 / result["work_s"], 3)
      record["wall_images_per_s"] = round(result["images"] / watched["wall_s"], 3)
    if output:
      record["masks"] = quality.count_masks(
        output if name.startswith(("naive", "stock")) else os.path.join(output, "masks")
      )
    self.runs.append(record)
    self.say(
      f"{name}: {record.get('images_per_s')} img/s (work {record['work_s']} s, wall {record['wall_s']} s), "
      f"peak RSS {record['peak_rss_mb']} MB"
    )
    return record

  def profile_pipeline(self, spy, name, images_dir, output, rate=50):
    """The in-memory pipeline under ``py-spy record``; seconds per stage of the main thread."""
    shutil.rmtree(output, ignore_errors=True)
    raw = output + ".pyspy.txt"
    argv = [
      "--input",
      os.path.join(images_dir, "*.png"),
      "--output",
      output,
      "--runner=FnApiRunner",
      f"--tile_size={self.profile['tile_size']}",
    ]
    self.say(f"{name} ...")
    watched = run_watched(
      [
        spy,
        "record",
        "--idle",
        "--threads",
        "--format",
        "raw",
        "--rate",
        str(rate),
        "--nonblocking",
        "-o",
        raw,
        "--",
        sys.executable,
        "-m",
        "pipeline.run",
      ]
      + argv,
      env=child_env(),
      cwd=REPO,
    )
    if watched["returncode"] != 0 or not os.path.exists(raw):
      self.say(f"{name} failed: {watched['stderr_tail'][-500:]}")
      return None
    with open(raw) as handle:
      text = handle.read()
    stages = spy_module.attribute(text, rate)
    threads = spy_module.background(text, rate)
    self.say(f"{name}: {stages}; background threads: {threads}")
    return {
      "wall_s": round(watched["wall_s"], 2),
      "stages_s": {k: round(v, 2) for k, v in stages.items()},
      "background_s": {t: {k: round(v, 2) for k, v in st.items()} for t, st in threads.items()},
      "load_before": watched["load_before"],
      "load_after": watched["load_after"],
      "argv": " ".join(argv),
    }

  def pipeline(self, name, images_dir, output, model_dir, workers=0, extra=(), **labels):
    shutil.rmtree(output, ignore_errors=True)
    argv = [
      "--input",
      os.path.join(images_dir, "*.png"),
      "--output",
      output,
      "--model",
      model_dir,
      "--runner=FnApiRunner",
      f"--tile_size={self.profile['tile_size']}",
    ] + list(extra)
    if workers:
      argv += ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    self.say(f"{name} ...")
    watched = run_watched([sys.executable, "-m", "pipeline.run"] + argv, env=self.pipeline_env or child_env(), cwd=REPO)
    if watched["returncode"] != 0:
      raise RuntimeError(f"{name} failed ({watched['returncode']}):\n{watched['stderr_tail']}")
    match = re.search(r"Time: ([0-9.]+) s", watched["stdout"])
    with open(os.path.join(output, "summary.json")) as handle:
      summary = json.load(handle)
    result = {
      "images": summary["counts"]["segmented"],
      "pixels": summary.get("pixels", 0),
      "work_s": float(match.group(1)) if match else watched["wall_s"],
      "failed": summary["counts"]["failed"],
      "argv": " ".join(argv),
    }
    labels.setdefault("mode", "pipeline")
    return self._record(name, result, watched, output, workers=workers or 1, **labels)


def _ratio(run, ceiling):
  if run.get("images_per_s") and ceiling and ceiling.get("images_per_s"):
    return round(run["images_per_s"] / ceiling["images_per_s"], 3)
  return None


def _hub_path(workdir):
  """tensorflow_hub + tf_keras in a side folder (``pip --no-deps --target``), never in the venv.

  ``TFModelHandlerNumpy``'s module imports ``tensorflow_hub``, which imports
  ``tf_keras``; ``tf_keras`` requires the ``tensorflow`` distribution (not
  ``tensorflow-cpu``), so installing it normally would pull a second
  TensorFlow. With ``--no-deps`` both import against the installed
  ``tensorflow-cpu``. Returns the folder, or None when pip cannot get them.
  """
  target = os.path.join(workdir, "stock-deps")
  if os.path.isdir(os.path.join(target, "tensorflow_hub")) and os.path.isdir(os.path.join(target, "tf_keras")):
    return target
  import subprocess  # pylint: disable=import-outside-toplevel

  command = [
    sys.executable,
    "-m",
    "pip",
    "install",
    "--quiet",
    "--no-deps",
    "--target",
    target,
    "tensorflow_hub==0.16.1",
    "tf_keras==2.21.*",
  ]
  try:
    subprocess.run(command, check=True, timeout=300, capture_output=True)
  except Exception:  # pylint: disable=broad-except
    return None
  return target


def _pyspy(workdir):
  """A py-spy executable: on PATH, or installed into the work folder with ``pip --target``."""
  found = shutil.which("py-spy")
  if found:
    return found
  target = os.path.join(workdir, "tools")
  executable = os.path.join(target, "bin", "py-spy")
  if not os.path.exists(executable):
    import subprocess  # pylint: disable=import-outside-toplevel

    try:
      subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", target, "py-spy"],
        check=True,
        timeout=300,
        capture_output=True,
      )
    except Exception:  # pylint: disable=broad-except
      return None
  return executable if os.path.exists(executable) else None


def run_bench(workdir, quick=False, stock_deps=True, log=sys.stderr):
  bench = Bench(workdir, quick, log)
  profile = bench.profile
  started = time.time()
  meta = {
    "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "cpus": os.cpu_count(),
    "platform": platform.platform(),
    "python": platform.python_version(),
    "load_start": load_average(),
    "quick": quick,
    "command": "python -m bench" + (" --quick" if quick else ""),
  }
  bench.say("generating workload")
  largest = profile["linear_base"] * 16
  pool_dir = workload.make_set(
    os.path.join(workdir, f"set512x{max(largest, profile['main'])}"),
    max(largest, profile["main"]),
    512 if not quick else 128,
    pool_size=profile["pool"],
    tile=512 if not quick else 128,
  )
  size = 512 if not quick else 128
  main_dir = workload.subset(pool_dir, profile["main"], os.path.join(workdir, f"main{profile['main']}"))
  big_dir = (
    workload.make_set(
      os.path.join(workdir, f"set{profile['big_size']}x{profile['big']}"),
      profile["big"],
      profile["big_size"],
      pool_size=profile["pool"],
      tile=512,
    )
    if profile["big"]
    else None
  )
  bench.say("preparing models")
  default_keras = models.default_keras(os.path.join(workdir, "models", "default.keras"))
  out = os.path.join(workdir, "out")
  stock_env = child_env()
  hub = _hub_path(workdir) if stock_deps else None
  if hub:
    stock_env["PYTHONPATH"] = stock_env["PYTHONPATH"] + os.pathsep + hub
  model_sets = [("default", models.DEFAULT_MODEL, default_keras, profile["main"], main_dir)]
  if profile["vgg"]:
    vgg_dir, vgg_keras = models.vgg16_models(os.path.join(workdir, "models"))
    vgg_images = workload.subset(pool_dir, profile["vgg"], os.path.join(workdir, f"vgg{profile['vgg']}"))
    model_sets.append(("fcn8s-vgg16", vgg_dir, vgg_keras, profile["vgg"], vgg_images))

  ceilings = {}
  for label, model_dir, keras_path, count, images_dir in model_sets:
    common = {"model": label, "set": f"{count} x {size}^2"}
    ceilings[label] = bench._mode(
      f"ceiling[{label}]",
      "ceiling",
      {
        "model": model_dir,
        "images": images_dir,
        "batch_sizes": [1, 2, 4, 8, 16, 32] if label == "default" else [1, 2, 4, 8],
        "sweep_images": min(count, 64 if label == "default" else 8),
      },
      mode="ceiling",
      **common,
    )
    bench.pipeline(f"pipeline in-memory[{label}]", images_dir, os.path.join(out, f"pipe-{label}"), model_dir, **common)
    bench.pipeline(
      f"pipeline multi_processing x2[{label}]",
      images_dir,
      os.path.join(out, f"pipemp-{label}"),
      model_dir,
      workers=2,
      **common,
    )
    shutil.rmtree(os.path.join(out, f"naive-{label}"), ignore_errors=True)
    bench._mode(
      f"naive loop[{label}]",
      "naive",
      {"keras": keras_path, "images": images_dir, "output": os.path.join(out, f"naive-{label}")},
      mode="naive",
      **common,
    )
    shutil.rmtree(os.path.join(out, f"stock-{label}"), ignore_errors=True)
    bench._mode(
      f"stock RunInference[{label}]",
      "stock",
      {
        "keras": keras_path,
        "images": images_dir,
        "output": os.path.join(out, f"stock-{label}"),
        "size": size,
        "batch_size": 8,
      },
      env=stock_env,
      mode="stock",
      **common,
    )

  # Linearity of the in-memory and multi-processing pipeline (default model).
  linearity = []
  for scale in (1, 4, 16) if profile["linear_base"] else ():
    count = profile["linear_base"] * scale
    images_dir = workload.subset(pool_dir, count, os.path.join(workdir, f"lin{count}"))
    for workers in (0, 2):
      tag = "multi_processing x2" if workers else "in-memory"
      run = bench.pipeline(
        f"linearity {scale}x {tag}",
        images_dir,
        os.path.join(out, f"lin{count}-{workers}"),
        models.DEFAULT_MODEL,
        workers=workers,
        model="default",
        set=f"{count} x {size}^2",
        scale=scale,
      )
      linearity.append(run)

  # Large images: memory per worker, and the stock handler's quality loss at a fixed input size.
  quality_rows = {
    "stock vs pipeline native, main set": quality.compare(
      os.path.join(out, "pipe-default", "masks"), os.path.join(out, "stock-default")
    ),
    "naive loop vs pipeline native, main set": quality.compare(
      os.path.join(out, "pipe-default", "masks"), os.path.join(out, "naive-default")
    ),
  }
  profiles = {}
  if big_dir:
    big_set = f"{profile['big']} x {profile['big_size']}^2"
    bench.pipeline(
      "pipeline in-memory[default, large]",
      big_dir,
      os.path.join(out, "big-pipe"),
      models.DEFAULT_MODEL,
      model="default",
      set=big_set,
    )
    bench.pipeline(
      "pipeline multi_processing x2[default, large]",
      big_dir,
      os.path.join(out, "big-pipemp"),
      models.DEFAULT_MODEL,
      workers=2,
      model="default",
      set=big_set,
    )
    shutil.rmtree(os.path.join(out, "big-stock"), ignore_errors=True)
    bench._mode(
      "stock RunInference[default, large]",
      "stock",
      {
        "keras": default_keras,
        "images": big_dir,
        "output": os.path.join(out, "big-stock"),
        "size": size,
        "batch_size": 8,
      },
      env=stock_env,
      mode="stock",
      model="default",
      set=big_set,
    )
    labels_dir = os.path.join(os.path.dirname(big_dir), "labels")
    quality_rows.update(
      {
        "stock (resize to fixed size) vs pipeline native, large images": quality.compare(
          os.path.join(out, "big-pipe", "masks"), os.path.join(out, "big-stock")
        ),
        "pipeline native vs ground truth, large images": _vs_labels(labels_dir, os.path.join(out, "big-pipe", "masks")),
        "stock vs ground truth, large images": _vs_labels(labels_dir, os.path.join(out, "big-stock")),
      }
    )
    # Where the pipeline's time goes: py-spy over the in-memory pipeline.
    spy = _pyspy(workdir)
    for label, images_dir in (("main set", main_dir), ("large images", big_dir)):
      if spy:
        profiles[label] = bench.profile_pipeline(
          spy, f"profile[{label}]", images_dir, os.path.join(out, f"profile-{label.replace(' ', '-')}")
        )

  # Model speed settings (ceiling variants): threads, batch size, XLA.
  settings = []
  if profile["settings"]:
    settings_dir = workload.subset(
      pool_dir, profile["settings"], os.path.join(workdir, f"settings{profile['settings']}")
    )
    # The model's own batch-size sweep is the ceiling's; this is the pipeline at a larger batch.
    settings.append(
      bench.pipeline(
        "pipeline --batch_size=16",
        main_dir,
        os.path.join(out, "pipe-batch16"),
        models.DEFAULT_MODEL,
        extra=["--batch_size=16"],
        mode="settings",
        model="default",
        set=f"{profile['main']} x {size}^2",
        setting="pipeline in-memory --batch_size=16 (default 8)",
      )
    )
    for intra, inter in ((1, 1), (2, 1), (1, 2)):
      settings.append(
        bench._mode(
          f"settings intra={intra} inter={inter}",
          "ceiling",
          {
            "model": models.DEFAULT_MODEL,
            "images": settings_dir,
            "batch_size": 8,
            "intra_op_threads": intra,
            "inter_op_threads": inter,
          },
          mode="settings",
          model="default",
          setting=f"threads intra {intra} inter {inter}",
        )
      )
    # TensorFlow reads these at start-up: one intra-op thread per SDK worker process, set from outside.
    env = child_env()
    env.update({"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"})
    bench.pipeline_env = env
    settings.append(
      bench.pipeline(
        "pipeline multi_processing x2, TF_NUM_INTRAOP_THREADS=1",
        main_dir,
        os.path.join(out, "pipemp-1thread"),
        models.DEFAULT_MODEL,
        workers=2,
        mode="settings",
        model="default",
        set=f"{profile['main']} x {size}^2",
        setting="pipeline multi_processing x2, TF_NUM_INTRAOP/INTEROP_THREADS=1",
      )
    )
    bench.pipeline_env = None
    for jit in (False, True):
      settings.append(
        bench._mode(
          f"settings jit_compile={jit}",
          "xla",
          {"keras": default_keras, "jit_compile": jit, "batch_size": 8, "calls": 5},
          mode="settings",
          model="default",
          setting=f"keras tf.function jit_compile={jit}",
        )
      )

  for run in bench.runs:
    run["ratio_to_ceiling"] = (
      _ratio(run, ceilings.get(run.get("model")))
      if run.get("set", "").startswith(str(profile["main"] if run.get("model") == "default" else profile["vgg"]))
      or run.get("scale")
      else None
    )
  meta["load_end"] = load_average()
  meta["seconds"] = round(time.time() - started, 1)
  meta["stock_handler_deps"] = hub
  report = {
    "meta": meta,
    "profile": profile,
    "runs": bench.runs,
    "quality": quality_rows,
    "steady_state": _steady_state(linearity),
    "profiles": profiles,
  }
  report["targets"] = _targets(report, ceilings.get("default"))
  return report


def _vs_labels(labels_dir, masks_dir):
  """Masks vs the generator's ground truth (labels are saved as <name>, masks as <name>.png)."""
  import tempfile  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory() as renamed:
    for name in os.listdir(labels_dir):
      os.symlink(os.path.join(labels_dir, name), os.path.join(renamed, name + ".png"))
    return quality.compare(renamed, masks_dir)


def _steady_state(linearity):
  """Least-squares time = fixed + images / rate, per runner mode."""
  out = {}
  for workers in (1, 2):
    points = [(r["images"], r["work_s"]) for r in linearity if r.get("workers") == workers]
    if len(points) < 2:
      continue
    n = len(points)
    mean_x = sum(p[0] for p in points) / n
    mean_y = sum(p[1] for p in points) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    out["multi_processing x2" if workers == 2 else "in-memory"] = {
      "fixed_s": round(mean_y - slope * mean_x, 2),
      "steady_images_per_s": round(1 / slope, 3) if slope > 0 else None,
      "points": [{"images": x, "work_s": y, "images_per_s": round(x / y, 3)} for x, y in points],
    }
  return out


def _targets(report, ceiling):
  """Each target from runs of the main 512x512 set measured back to back with the ceiling."""
  runs = report["runs"]

  def find(name):
    return next((r for r in runs if r["name"] == name), None)

  in_memory = find("pipeline in-memory[default]")
  candidates = [r for r in (in_memory, find("pipeline multi_processing x2[default]")) if r]
  best_pipeline = max(candidates, key=lambda r: r.get("images_per_s") or 0, default=None)
  naive = find("naive loop[default]")
  stock = find("stock RunInference[default]")
  large = [p for r in runs if "large" in r["name"] and r["name"].startswith("pipeline") for p in r["processes"]]
  targets = {}
  if ceiling and best_pipeline:
    value = _ratio(best_pipeline, ceiling)
    targets["pipeline >= 0.85 x ceiling, default model, 512x512"] = {
      "value": value,
      "run": best_pipeline["name"],
      "met": value is not None and value >= 0.85,
    }
  if best_pipeline and naive:
    value = round(best_pipeline["images_per_s"] / naive["images_per_s"], 3)
    targets[">= 2 x naive loop"] = {"value": value, "met": value >= 2}
  if best_pipeline and stock:
    value = round(best_pipeline["images_per_s"] / stock["images_per_s"], 3)
    targets[">= 1 x stock RunInference"] = {"value": value, "met": value >= 1}
  fits = report["steady_state"]
  if fits:
    # Linear: the marginal rate at 4x->16x within 25 % of the fitted rate, per runner.
    worst = None
    for fit in fits.values():
      points = fit["points"]
      if len(points) == 3 and fit["steady_images_per_s"]:
        marginal = (points[2]["images"] - points[1]["images"]) / (points[2]["work_s"] - points[1]["work_s"])
        deviation = abs(marginal / fit["steady_images_per_s"] - 1)
        worst = deviation if worst is None else max(worst, deviation)
    if worst is not None:
      targets["linear in images (4x->16x marginal rate within 25 % of the fit)"] = {
        "value": round(worst, 3),
        "met": worst <= 0.25,
      }
  if large:
    peak = max(p["peak_rss_mb"] for p in large)
    targets["< 2 GB per process on large images"] = {"value_mb": peak, "met": peak < 2048}
  return targets


def render_markdown(report) -> str:
  meta = report["meta"]
  lines = [
    f"Measured {meta['started']} on {meta['cpus']} CPUs ({meta['platform']}, Python {meta['python']}); "
    f"load average at start {meta['load_start']}, at end {meta['load_end']}; whole run {meta['seconds']} s.",
    f"Command: `{meta['command']}`.",
    "",
    "| run | model | workload | images/s | Mpx/s | × ceiling | work s | wall s | peak RSS MB (per process) | masks | load before→after |",
    "|---|---|---|---:|---:|---:|---:|---:|---|---:|---|",
  ]
  for run in report["runs"]:
    if run.get("mode") in ("profile", "settings"):
      continue
    peaks = ", ".join(f"{p['peak_rss_mb']:.0f}" for p in run["processes"])
    lines.append(
      f"| {run['name']} | {run.get('model', '')} | {run.get('set', '')} | {run.get('images_per_s', '')} | "
      f"{run.get('mpx_per_s', '')} | {run.get('ratio_to_ceiling') or ''} | {run['work_s']} | {run['wall_s']} | "
      f"{peaks} | {run.get('masks', '')} | {run['load_before'][0]:.1f}→{run['load_after'][0]:.1f} |"
    )
  lines += [
    "",
    "Steady state (least squares over the 1×/4×/16× runs: work time = fixed + images / rate):",
    "",
    "| runner | fixed s | steady images/s | points (images: images/s) |",
    "|---|---:|---:|---|",
  ]
  for name, fit in report["steady_state"].items():
    points = ", ".join(f"{p['images']}: {p['images_per_s']}" for p in fit["points"])
    lines.append(f"| {name} | {fit['fixed_s']} | {fit['steady_images_per_s']} | {points} |")
  lines += [
    "",
    "Quality (pixel agreement / mean IoU):",
    "",
    "| comparison | images | pixel agreement | mean IoU |",
    "|---|---:|---:|---:|",
  ]
  for name, row in report["quality"].items():
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
    lines.append(f"| {name} | {row['images']} | {fmt(row['pixel_agreement'])} | {fmt(row['mean_iou'])} |")
  for label, prof in report["profiles"].items():
    if not prof:
      continue
    total = sum(prof["stages_s"].values()) or 1
    in_pipeline = sum(v for k, v in prof["stages_s"].items() if not k.startswith(("start-up", "other"))) or 1
    lines += [
      "",
      f"Time split, {label}: py-spy samples of the main thread (in-memory FnApiRunner runs every "
      f"bundle there), `{prof['argv']}`, wall {prof['wall_s']} s, load {prof['load_before'][0]:.1f}:",
      "",
      "| stage | s | share of run | share of pipeline |",
      "|---|---:|---:|---:|",
    ]
    for stage, seconds in prof["stages_s"].items():
      share = "" if stage.startswith(("start-up", "other")) else f"{seconds / in_pipeline:.0%}"
      lines.append(f"| {stage} | {seconds:.2f} | {seconds / total:.0%} | {share} |")
    if prof.get("background_s"):
      lines += [
        "",
        "Same run, the look-ahead threads (decode ahead of the model, encode and write behind it; "
        "py-spy samples of each thread, busy or waiting):",
        "",
        "| thread | stage | s |",
        "|---|---|---:|",
      ]
      for thread, stages in prof["background_s"].items():
        for stage, seconds in stages.items():
          lines.append(f"| {thread} | {stage} | {seconds:.2f} |")
  for run in report["runs"]:
    if run.get("mode") == "ceiling" and run["detail"].get("batch_sweep_images_per_s"):
      sweep = ", ".join(f"{k}: {v}" for k, v in run["detail"]["batch_sweep_images_per_s"].items())
      lines += ["", f"Ceiling batch-size sweep, {run['model']} (images/s by batch size; the best is used): {sweep}."]
  settings = [r for r in report["runs"] if r.get("mode") == "settings"]
  if settings:
    lines += [
      "",
      "Model speed settings (default model, 512², ceiling loop):",
      "",
      "| setting | images/s | first call s | load before |",
      "|---|---:|---:|---|",
    ]
    for run in settings:
      lines.append(
        f"| {run['setting']} | {run.get('images_per_s')} | {run['detail'].get('first_call_s', '')} | "
        f"{run['load_before'][0]:.1f} |"
      )
  lines += ["", "Targets:", "", "| target | value | met |", "|---|---|---|"]
  for name, target in report["targets"].items():
    value = target.get("value", target.get("value_mb"))
    lines.append(f"| {name} | {value} | {'yes' if target['met'] else 'no'} |")
  return "\n".join(lines) + "\n"


RESULTS_BEGIN = "<!-- bench:results:begin -->"
RESULTS_END = "<!-- bench:results:end -->"


def write_report(report, out_path):
  if out_path.endswith(".json"):
    with open(out_path, "w") as handle:
      json.dump(report, handle, indent=1)
    return
  table = render_markdown(report)
  block = f"{RESULTS_BEGIN}\n{table}{RESULTS_END}"
  text = ""
  if os.path.exists(out_path):
    with open(out_path) as handle:
      text = handle.read()
  if RESULTS_BEGIN in text and RESULTS_END in text:
    head, rest = text.split(RESULTS_BEGIN, 1)
    text = head + block + rest.split(RESULTS_END, 1)[1]
  else:
    text = (text.rstrip() + "\n\n" if text else "# Performance\n\n") + block + "\n"
  with open(out_path, "w") as handle:
    handle.write(text)
  with open(os.path.splitext(out_path)[0] + ".json", "w") as handle:
    json.dump(report, handle, indent=1)


def main(argv=None):
  parser = argparse.ArgumentParser(
    prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--quick", action="store_true", help="tiny workload for smoke tests")
  parser.add_argument("--out", default=None, help="report path: .md (results block replaced in place) or .json")
  parser.add_argument(
    "--workdir", default=None, help="workload cache and outputs (default /tmp/deconvseg-bench[-quick])"
  )
  parser.add_argument(
    "--no_stock_deps",
    action="store_true",
    help="do not fetch tensorflow_hub/tf_keras into the workdir; measure the stock-equivalent handler",
  )
  args = parser.parse_args(argv)
  workdir = args.workdir or ("/tmp/deconvseg-bench-quick" if args.quick else "/tmp/deconvseg-bench")
  report = run_bench(workdir, args.quick, stock_deps=not args.no_stock_deps)
  if args.out:
    write_report(report, args.out)
  print(render_markdown(report))
  return 0
