"""One benchmark measurement at a time: run a mode or the pipeline in a fresh, watched process and record it.

``Bench`` starts ``python -m bench.modes PROGRAM`` or ``python -m
pipeline.run`` (optionally under py-spy), watched by ``bench.procs`` for wall
time and per-process peak RSS, and keeps one record per run (images/s, Mpx/s,
load before and after, masks written) for ``bench.findings`` and
``bench.report``.
"""

import json
import os
import re
import shutil
import sys
import time

from bench import quality
from bench import spy as spy_module
from bench.procs import REPO, child_env, load_average, run_watched

PROFILES = {
  # Counts of 512^2 images: main set, linearity base, big images, vgg16 images, settings images; the engines
  # alone on engine_count arrays at each of engine_batches; end to end on each e2e count of JPEGs; a short run.
  "full": {
    "main": 200,
    "linear_base": 20,
    "big": 4,
    "big_size": 4096,
    "vgg": 8,
    "settings": 64,
    "pool": 24,
    "tile_size": 512,
    "engine_count": 48,
    "engine_batches": [1, 8, 16],
    "e2e": [160, 1000],
    "short": 8,
  },
  # Smoke test: every mode on a few small images; no sweep, large images, profile or settings.
  "quick": {
    "main": 4,
    "linear_base": 0,
    "big": 0,
    "big_size": 0,
    "vgg": 0,
    "settings": 0,
    "pool": 2,
    "tile_size": 256,
    "engine_count": 16,
    "engine_batches": [1, 8, 16],
    "e2e": [4],
    "short": 8,
  },
}


class Bench:
  """The runs of one benchmark, in the order measured, with the workload profile they use."""

  def __init__(self, workdir, quick, log=sys.stderr):
    self.workdir = workdir
    self.profile = PROFILES["quick" if quick else "full"]
    self.quick = quick
    self.log = log
    self.runs = []

  def say(self, message):
    print(f"[bench {time.strftime('%H:%M:%S')} load {load_average()[0]:.2f}] {message}", file=self.log, flush=True)

  def mode(self, name, program, args, env=None, **labels):
    """``python -m bench.modes PROGRAM ARGS`` in a fresh process; raises when it fails."""
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
      # The pipeline writes OUT/masks/; the hand-written programs write their masks into OUT itself.
      masks = os.path.join(output, "masks")
      record["masks"] = quality.count_masks(masks if os.path.isdir(masks) else output)
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

  def pipeline(
    self, name, images_dir, output, model_dir, workers=0, extra=(), env=None, pattern="*.png", defaults=False, **labels
  ):
    """``python -m pipeline.run`` on a folder of images, in-memory or with ``workers`` processes.

    ``defaults`` runs it as a user would, with no flag beyond input, output and model.
    """
    shutil.rmtree(output, ignore_errors=True)
    argv = ["--input", os.path.join(images_dir, pattern), "--output", output, "--model", model_dir]
    if not defaults:
      argv += ["--runner=FnApiRunner", f"--tile_size={self.profile['tile_size']}"]
    argv += list(extra)
    if workers:
      argv += ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    self.say(f"{name} ...")
    watched = run_watched([sys.executable, "-m", "pipeline.run"] + argv, env=env or child_env(), cwd=REPO)
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
      "engine": summary.get("engine"),
    }
    labels.setdefault("mode", "pipeline")
    return self._record(name, result, watched, output, workers=workers or 1, **labels)

  def pipelines(self, tag, images_dir, outputs, model_dir, **labels):
    """The in-memory pipeline, then multi_processing with 2 workers, on the same images: two records."""
    in_memory, multi = outputs
    return (
      self.pipeline(f"pipeline in-memory[{tag}]", images_dir, in_memory, model_dir, **labels),
      self.pipeline(f"pipeline multi_processing x2[{tag}]", images_dir, multi, model_dir, workers=2, **labels),
    )
