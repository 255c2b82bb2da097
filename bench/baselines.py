"""The pipeline end to end against what a competent user would write instead.

    python -m bench.baselines --images 160,1000 --out docs/PERFORMANCE.md

For each image count (512² PNGs from ``bench.workload``), in fresh processes
and in turn: the pipeline (``python -m pipeline.run``, its ``Time:`` line
and its whole wall time), the careful per-image loop (``bench.modes loop``:
``serving_default`` at batch 1, palette PNG and counts per image), the
``tf.data`` script (``bench.modes tfdata``) and the same loop on OpenVINO
(``bench.modes openvino_loop``). Wall time includes process
start, imports and model load, because that is what a user waits for.
Ratios are baseline wall time / pipeline wall time: above 1 the pipeline is
faster. ``--repeats`` runs every program that many times, interleaved, and
keeps each one's best, so a load spike on a shared machine hurts all alike.
"""

import argparse
import json
import os
import sys
import time

from bench import scale, workload
from bench.models import DEFAULT_MODEL
from bench.procs import REPO, child_env, load_average, peak_rss_mb, run_watched

MARK_BEGIN, MARK_END = "<!-- baselines:begin -->", "<!-- baselines:end -->"


def _pipeline(images_dir, output):
  """The pipeline run exactly as ``bench.scale`` runs and watches it."""
  run = scale.run_pipeline(images_dir, output, DEFAULT_MODEL)
  return {"wall_s": run["wall_s"], "time_window_s": run["work_s"], "peak_rss_mb": run["peak_rss_mb"]}


def _mode(mode, images_dir, output):
  args = {"model": DEFAULT_MODEL, "images": images_dir, "output": output}
  if mode == "openvino_loop":
    from model.engines.openvino_ir import locate_ir

    args["ir"] = locate_ir(DEFAULT_MODEL)[0]
  watched = run_watched([sys.executable, "-m", "bench.modes", mode, json.dumps(args)], env=child_env(), cwd=REPO)
  if watched["returncode"] != 0:
    raise RuntimeError(f"{mode} failed: {watched['stderr_tail']}")
  result = json.loads(watched["stdout"].strip().splitlines()[-1])
  return {"wall_s": watched["wall_s"], "work_s": result["work_s"], "peak_rss_mb": peak_rss_mb(watched)}


def measure(counts, workdir, repeats):
  rows = []
  for count in counts:
    images_dir = workload.make_set(os.path.join(workdir, f"set{count}"), count, 512)
    best = {}
    loads = []
    for attempt in range(repeats):
      loads.append(load_average()[0])
      for name, run in (
        ("pipeline", lambda out, images=images_dir: _pipeline(images, out)),
        ("loop", lambda out, images=images_dir: _mode("loop", images, out)),
        ("tfdata", lambda out, images=images_dir: _mode("tfdata", images, out)),
        ("openvino_loop", lambda out, images=images_dir: _mode("openvino_loop", images, out)),
      ):
        result = run(os.path.join(workdir, f"out-{name}-{count}-{attempt}"))
        if name not in best or result["wall_s"] < best[name]["wall_s"]:
          best[name] = result
    loads.append(load_average()[0])
    row = {"images": count, "load": [min(loads), max(loads)], **{name: best[name] for name in best}}
    row["pipeline_vs_loop"] = best["loop"]["wall_s"] / best["pipeline"]["wall_s"]
    row["pipeline_vs_tfdata"] = best["tfdata"]["wall_s"] / best["pipeline"]["wall_s"]
    row["pipeline_vs_openvino_loop"] = best["openvino_loop"]["wall_s"] / best["pipeline"]["wall_s"]
    print(json.dumps(row), flush=True)
    rows.append(row)
  return rows


def markdown(rows, command):
  lines = [
    f"`{command}` on {time.strftime('%Y-%m-%d')} (best of the repeats; wall time includes process start)",
    "",
    "| images of 512² | pipeline wall s (`Time:` window) | careful loop wall s | tf.data wall s | "
    "OpenVINO loop wall s | pipeline vs loop | pipeline vs tf.data | pipeline vs OpenVINO loop | load avg |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
  ]
  for row in rows:
    lines.append(
      f"| {row['images']:,} | {row['pipeline']['wall_s']:.1f} ({row['pipeline']['time_window_s']:.1f}) | "
      f"{row['loop']['wall_s']:.1f} | {row['tfdata']['wall_s']:.1f} | {row['openvino_loop']['wall_s']:.1f} | "
      f"{row['pipeline_vs_loop']:.2f}× | {row['pipeline_vs_tfdata']:.2f}× | {row['pipeline_vs_openvino_loop']:.2f}× | "
      f"{row['load'][0]:.1f}-{row['load'][1]:.1f} |"
    )
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__.split("\n")[0])
  parser.add_argument("--images", default="160,1000", help="comma-separated image counts")
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--workdir", default="/tmp/deconvseg-baselines")
  parser.add_argument("--out", default=None, help=".md: replace the marked baselines block; .json: write rows")
  args = parser.parse_args(argv)
  counts = [int(value) for value in args.images.split(",") if value]
  rows = measure(counts, args.workdir, args.repeats)
  command = "python -m bench.baselines " + " ".join(argv if argv is not None else sys.argv[1:])
  text = markdown(rows, command)
  print(text)
  if args.out and args.out.endswith(".json"):
    with open(args.out, "w") as handle:
      json.dump({"command": command, "rows": rows}, handle, indent=2)
  elif args.out:
    with open(args.out) as handle:
      document = handle.read()
    if MARK_BEGIN not in document:
      raise SystemExit(f"{args.out} has no {MARK_BEGIN} ... {MARK_END} block to replace")
    head, rest = document.split(MARK_BEGIN, 1)
    with open(args.out, "w") as handle:
      handle.write(head + MARK_BEGIN + "\n" + text + MARK_END + rest.split(MARK_END, 1)[1])
  return 0


if __name__ == "__main__":
  sys.exit(main())
