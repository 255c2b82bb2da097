"""The benchmark's report: the Markdown tables, and writing them into docs/PERFORMANCE.md's results block or JSON."""

import json
import os


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
