"""Orchestrates the benchmark (the pipeline against the model's ceiling and the alternatives) and writes the report.

    python -m bench                              # full run (~25 min on 2 cores), prints JSON + table
    python -m bench --out docs/PERFORMANCE.md    # also writes the Markdown report (results section)
    python -m bench --quick --out /tmp/b.json    # smoke test (tiny workload, about 2 minutes)

Every figure comes from a fresh process (``bench.modes`` or ``python -m
pipeline.run``) watched by ``bench.procs`` for wall time and per-process peak
RSS. Ratios are images/s divided by the ceiling's images/s for the same
model and image size; the CPU engines alone and the end-to-end comparison
with the hand-written programs are ``bench.engine_runs``. The load average
before and after each measurement is recorded because the machine may be
shared.
"""

# This module is the plan of the whole benchmark (run_bench) and the command. One measurement in a fresh process is
# bench.harness; pip --target fetches are bench.fetch; ratios, the steady-state fit and the targets are
# bench.findings; the Markdown tables and the results block are bench.report.

import argparse
import datetime
import os
import platform
import shutil
import sys
import time

from bench import engine_runs, fetch, models, quality, workload
from bench.findings import ratio, steady_state, targets
from bench.harness import Bench
from bench.procs import child_env, load_average
from bench.report import render_markdown, write_report
from model.engines import cpu


def _stock(bench, tag, keras_path, images_dir, output, size, env, **labels):
  """Stock RunInference (resizes every image to size x size) into a fresh output folder."""
  shutil.rmtree(output, ignore_errors=True)
  return bench.mode(
    f"stock RunInference[{tag}]",
    "stock",
    {"keras": keras_path, "images": images_dir, "output": output, "size": size, "batch_size": 8},
    env=env,
    mode="stock",
    **labels,
  )


def run_bench(workdir, quick=False, stock_deps=True, log=sys.stderr, engines_only=False):
  """Every measurement of the profile, in order; returns the report (meta, runs, quality, fits, targets).

  ``engines_only`` measures just the CPU engines alone and the end-to-end comparison (about 15 minutes).
  """
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
  largest = max(profile["linear_base"] * 16, profile["main"], *profile["e2e"], profile["short"])
  pool_dir = workload.make_set(
    os.path.join(workdir, f"set512x{largest}"),
    largest,
    512 if not quick else 128,
    pool_size=profile["pool"],
    tile=512 if not quick else 128,
  )
  size = 512 if not quick else 128
  main_dir = workload.subset(pool_dir, profile["main"], os.path.join(workdir, f"main{profile['main']}"))
  if engines_only:
    meta["command"] += " --engines_only"
    return _engine_report(bench, meta, started, pool_dir, main_dir, workdir, size, {}, {}, {}, [], {})
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
  hub = fetch.hub_path(workdir) if stock_deps else None
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
    ceilings[label] = bench.mode(
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
    bench.pipelines(
      label, images_dir, (os.path.join(out, f"pipe-{label}"), os.path.join(out, f"pipemp-{label}")), model_dir, **common
    )
    shutil.rmtree(os.path.join(out, f"naive-{label}"), ignore_errors=True)
    bench.mode(
      f"naive loop[{label}]",
      "naive",
      {"keras": keras_path, "images": images_dir, "output": os.path.join(out, f"naive-{label}")},
      mode="naive",
      **common,
    )
    _stock(bench, label, keras_path, images_dir, os.path.join(out, f"stock-{label}"), size, stock_env, **common)

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
    bench.pipelines(
      "default, large",
      big_dir,
      (os.path.join(out, "big-pipe"), os.path.join(out, "big-pipemp")),
      models.DEFAULT_MODEL,
      model="default",
      set=big_set,
    )
    _stock(
      bench,
      "default, large",
      default_keras,
      big_dir,
      os.path.join(out, "big-stock"),
      size,
      stock_env,
      model="default",
      set=big_set,
    )
    labels_dir = os.path.join(os.path.dirname(big_dir), "labels")
    quality_rows.update(
      {
        "stock (resize to fixed size) vs pipeline native, large images": quality.compare(
          os.path.join(out, "big-pipe", "masks"), os.path.join(out, "big-stock")
        ),
        "pipeline native vs ground truth, large images": quality.compare_to_labels(
          labels_dir, os.path.join(out, "big-pipe", "masks")
        ),
        "stock vs ground truth, large images": quality.compare_to_labels(labels_dir, os.path.join(out, "big-stock")),
      }
    )
    # Where the pipeline's time goes: py-spy over the in-memory pipeline.
    spy = fetch.pyspy(workdir)
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
        bench.mode(
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
    # The engine's threads: every core in one process (the default), or one per process with two processes
    # (the default there) against two each, which oversubscribes the two cores.
    for threads, workers in ((1, 0), (2, 2)):
      settings.append(
        bench.pipeline(
          f"pipeline {'multi_processing x2' if workers else 'in-memory'}, --engine_threads={threads}",
          main_dir,
          os.path.join(out, f"pipe-threads{threads}-{workers}"),
          models.DEFAULT_MODEL,
          workers=workers,
          extra=[f"--engine_threads={threads}"],
          mode="settings",
          model="default",
          set=f"{profile['main']} x {size}^2",
          setting=f"pipeline {'multi_processing x2' if workers else 'in-memory'} --engine_threads={threads} "
          f"(default: {'1 per process' if workers else 'all cores'})",
        )
      )
    for jit in (False, True):
      settings.append(
        bench.mode(
          f"settings jit_compile={jit}",
          "xla",
          {"keras": default_keras, "jit_compile": jit, "batch_size": 8, "calls": 5},
          mode="settings",
          model="default",
          setting=f"keras tf.function jit_compile={jit}",
        )
      )

  return _engine_report(
    bench, meta, started, pool_dir, main_dir, workdir, size, ceilings, quality_rows, profiles, linearity, hub
  )


def _engine_report(
  bench, meta, started, pool_dir, main_dir, workdir, size, ceilings, quality_rows, profiles, linearity, hub
):
  """The CPU engines alone, the end-to-end comparison and the short run; then the report of every run made."""
  profile = bench.profile
  # The model alone on each CPU engine and precision (default model, pre-decoded arrays of the main set).
  engines = engine_runs.engine_ceilings(
    bench,
    "default",
    models.DEFAULT_MODEL,
    main_dir,
    workdir,
    profile["engine_count"],
    profile["engine_batches"],
    f"{profile['engine_count']} x {size}^2",
  )

  # End to end on JPEGs: the pipeline with default flags against the three hand-written programs, then a short run.
  jpeg_count = max(*profile["e2e"], profile["short"])
  jpeg_dir = workload.jpeg_set(pool_dir, jpeg_count, os.path.join(workdir, f"jpeg{size}x{jpeg_count}"))
  end_to_end = [
    engine_runs.end_to_end(bench, jpeg_dir, count, models.DEFAULT_MODEL, workdir, size) for count in profile["e2e"]
  ]
  short = engine_runs.short_run(bench, jpeg_dir, profile["short"], models.DEFAULT_MODEL, workdir, size)

  for run in bench.runs:
    main_set = run.get("mode") not in ("engine_ceiling", "e2e", "short") and run.get("set", "").startswith(
      str(profile["main"] if run.get("model") == "default" else profile["vgg"])
    )
    run["ratio_to_ceiling"] = ratio(run, ceilings.get(run.get("model"))) if main_set or run.get("scale") else None
  meta["load_end"] = load_average()
  meta["seconds"] = round(time.time() - started, 1)
  meta["stock_handler_deps"] = hub
  meta["cpu"] = cpu.probe().describe()
  meta["openvino_auto_precision"] = engine_runs.auto_precision(models.DEFAULT_MODEL)
  report = {
    "meta": meta,
    "profile": profile,
    "runs": bench.runs,
    "quality": quality_rows,
    "steady_state": steady_state(linearity),
    "profiles": profiles,
    "engines": engines,
    "end_to_end": end_to_end,
    "short_run": short["name"],
  }
  report["targets"] = targets(report, ceilings.get("default"))
  return report


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
  parser.add_argument(
    "--engines_only",
    action="store_true",
    help="only the CPU engines alone and the end-to-end comparison with the TF, tf.data and OpenVINO loops",
  )
  args = parser.parse_args(argv)
  workdir = args.workdir or ("/tmp/deconvseg-bench-quick" if args.quick else "/tmp/deconvseg-bench")
  report = run_bench(workdir, args.quick, stock_deps=not args.no_stock_deps, engines_only=args.engines_only)
  if args.out:
    write_report(report, args.out)
  print(render_markdown(report))
  return 0
