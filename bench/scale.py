"""Scale run: the same pipeline on N and on a baseline of M images; memory flat, time linear.

    python -m bench.scale                                  # 10,000 vs 2,000 images of 512x512 (about 15 min on 2 cores)
    python -m bench.scale --images 400 --baseline 80 --size 128 --out /tmp/scale.json

Both runs use the in-process runner (``python -m pipeline.run``, no
``--runner``), each in a fresh process watched by ``bench.procs`` for peak
RSS. The baseline's images are the first M of the large set (symlinks), so
both runs see the same kind of pictures. Checks, per run: ``read = segmented +
failed``, one mask file and one stats record per image; across runs: peak RSS
within ``--rss_tolerance`` (10 %) of the baseline's and images/s within
``--rate_tolerance`` (15 %) of it (linear time). Exit status 1 when a check fails.
"""

import argparse
import json
import os
import re
import shutil
import sys
import time

from bench import workload
from bench.models import DEFAULT_MODEL
from bench.procs import REPO, child_env, load_average, peak_rss_mb, run_watched


def _count_files(folder: str, suffix: str) -> int:
  count = 0
  for _, _, names in os.walk(folder):
    count += sum(1 for name in names if name.endswith(suffix))
  return count


def run_pipeline(images_dir: str, output: str, model: str, extra=(), log=sys.stderr) -> dict:
  """One watched ``python -m pipeline.run``; returns its figures and completeness counts."""
  shutil.rmtree(output, ignore_errors=True)
  argv = ["--input", os.path.join(images_dir, "*.png"), "--output", output, "--model", model] + list(extra)
  command = [sys.executable, "-m", "pipeline.run"] + argv
  print(
    f"[scale {time.strftime('%H:%M:%S')} load {load_average()[0]:.2f}] {' '.join(command[1:])}", file=log, flush=True
  )
  watched = run_watched(command, env=child_env(), cwd=REPO, timeout=6 * 3600)
  if watched["returncode"] != 0:
    raise RuntimeError(f"pipeline failed ({watched['returncode']}):\n{watched['stderr_tail']}")
  match = re.search(r"Time: ([0-9.]+) s", watched["stdout"])
  with open(os.path.join(output, "summary.json")) as handle:
    summary = json.load(handle)
  records = 0
  for path in summary["outputs"]["stats"]:  # the run's own record files
    with open(path) as handle:
      records += sum(1 for line in handle if line.strip())
  counts = summary["counts"]
  work_s = float(match.group(1)) if match else watched["wall_s"]
  return {
    "command": "python -m pipeline.run " + " ".join(argv),
    "images": len(os.listdir(images_dir)),
    "read": counts["read"],
    "segmented": counts["segmented"],
    "failed": counts["failed"],
    "masks": _count_files(os.path.join(output, "masks"), ".png"),
    "records": records,
    "work_s": work_s,
    "wall_s": round(watched["wall_s"], 2),
    "images_per_s": round(counts["segmented"] / work_s, 3),
    "peak_rss_mb": peak_rss_mb(watched),
    "io": summary.get("io"),
    "load_before": watched["load_before"],
    "load_after": watched["load_after"],
  }


def check(base: dict, large: dict, rss_tolerance: float = 0.10, rate_tolerance: float = 0.15) -> dict:
  """Each check's value and verdict."""
  checks = {}
  for name, run in (("baseline", base), ("large", large)):
    checks[f"{name}: read = segmented + failed"] = {
      "value": f"{run['read']} = {run['segmented']} + {run['failed']}",
      "met": run["read"] == run["segmented"] + run["failed"] == run["images"],
    }
    checks[f"{name}: one mask and one record per image"] = {
      "value": f"{run['masks']} masks, {run['records']} records, {run['images']} images",
      "met": run["masks"] == run["records"] == run["images"] and run["failed"] == 0,
    }
  rss = large["peak_rss_mb"] / base["peak_rss_mb"] - 1
  checks[f"peak RSS within {rss_tolerance:.0%} of the baseline"] = {
    "value": f"{base['peak_rss_mb']:.0f} -> {large['peak_rss_mb']:.0f} MB ({rss:+.1%})",
    "met": rss <= rss_tolerance,
  }
  rate = large["images_per_s"] / base["images_per_s"] - 1
  checks[f"images/s within {rate_tolerance:.0%} of the baseline (linear time)"] = {
    "value": f"{base['images_per_s']} -> {large['images_per_s']} images/s ({rate:+.1%})",
    "met": abs(rate) <= rate_tolerance,
  }
  return checks


def render(report: dict) -> str:
  lines = [
    f"Measured {report['started']} to {report['finished']}; command: `{report['command']}`.",
    "",
    "| run | images | read | segmented | failed | masks | records | work s | wall s | images/s | peak RSS MB | load before→after |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
  ]
  for name in ("baseline", "large"):
    run = report[name]
    lines.append(
      f"| {name} | {run['images']} | {run['read']} | {run['segmented']} | {run['failed']} | {run['masks']} | "
      f"{run['records']} | {run['work_s']} | {run['wall_s']} | {run['images_per_s']} | "
      f"{run['peak_rss_mb']:.0f} | {run['load_before'][0]:.1f}→{run['load_after'][0]:.1f} |"
    )
  lines += ["", "| check | value | met |", "|---|---|---|"]
  lines += [f"| {name} | {c['value']} | {'yes' if c['met'] else 'no'} |" for name, c in report["checks"].items()]
  return "\n".join(lines) + "\n"


def run_scale(
  images: int,
  baseline: int,
  size: int = 512,
  workdir: str = "/tmp/deconvseg-bench",
  model: str = DEFAULT_MODEL,
  pool: int = 24,
  extra=(),
  rss_tolerance=0.10,
  rate_tolerance=0.15,
  log=sys.stderr,
) -> dict:
  if not 0 < baseline < images:
    raise ValueError(f"--baseline ({baseline}) must be between 1 and --images ({images})")
  started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
  images_dir = workload.make_set(
    os.path.join(workdir, f"set{size}x{images}"), images, size, pool_size=pool, tile=min(size, 512)
  )
  base_dir = workload.subset(images_dir, baseline, os.path.join(workdir, f"scale{size}x{baseline}"))
  base = run_pipeline(base_dir, os.path.join(workdir, "out", f"scale-{baseline}"), model, extra, log)
  large = run_pipeline(images_dir, os.path.join(workdir, "out", f"scale-{images}"), model, extra, log)
  report = {
    "started": started,
    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "command": f"python -m bench.scale --images {images} --baseline {baseline} --size {size}",
    "cpus": os.cpu_count(),
    "baseline": base,
    "large": large,
  }
  report["checks"] = check(base, large, rss_tolerance, rate_tolerance)
  return report


def main(argv=None):
  parser = argparse.ArgumentParser(
    prog="python -m bench.scale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--images", type=int, default=10000, help="images in the large run (default 10000)")
  parser.add_argument("--baseline", type=int, default=2000, help="images in the baseline run (default 2000)")
  parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
  parser.add_argument("--model", default=DEFAULT_MODEL, help="model directory (default: the bundled model)")
  parser.add_argument("--workdir", default="/tmp/deconvseg-bench", help="workload cache and outputs")
  parser.add_argument("--pool", type=int, default=24, help="distinct generator examples in the workload")
  parser.add_argument("--rss_tolerance", type=float, default=0.10)
  parser.add_argument("--rate_tolerance", type=float, default=0.15)
  parser.add_argument("--out", default=None, help="also write the JSON report here")
  args, extra = parser.parse_known_args(argv)
  report = run_scale(
    args.images,
    args.baseline,
    args.size,
    args.workdir,
    args.model,
    args.pool,
    extra,
    args.rss_tolerance,
    args.rate_tolerance,
  )
  if args.out:
    with open(args.out, "w") as handle:
      json.dump(report, handle, indent=1)
  print(render(report))
  return 0 if all(c["met"] for c in report["checks"].values()) else 1


if __name__ == "__main__":
  sys.exit(main())
