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
    if run.get("mode") in ("profile", "settings", "engine_ceiling", "e2e", "short"):
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
  lines += engine_lines(report) + end_to_end_lines(report)
  lines += ["", "Targets:", "", "| target | value | result |", "|---|---|---|"]
  for name, target in report["targets"].items():
    value = target.get("value", target.get("value_mb"))
    result = {True: "met", False: "missed", None: "not measured"}[target["met"]]
    note = f" ({target['note']})" if target.get("note") else ""
    lines.append(f"| {name} | {'' if value is None else value} | {result}{note} |")
  return "\n".join(lines) + "\n"


def engine_lines(report):
  """The model alone per CPU engine and precision: images/s by batch size, agreement, or why there is no row."""
  rows = report.get("engines") or []
  if not rows:
    return []
  sizes = [str(b) for b in report["profile"]["engine_batches"]]
  reference = next((r for r in rows if r["engine"] == "tensorflow" and r.get("status") == "measured"), None)
  top = sizes[-1]
  meta = report["meta"]
  cpu = meta.get("cpu") or {}
  lines = [
    "",
    f"The model alone per CPU engine ({rows[0]['model']} model, {_engine_set(report)} pre-decoded "
    "uint8 arrays; decode excluded, each batch shape "
    f"compiled or traced by one untimed call first; OpenVINO through the pipeline's own engine code). "
    f"CPU: {cpu.get('name', '?')}, flags {', '.join(cpu.get('flags', [])) or 'none relevant'}; "
    f"`--precision auto` resolves to {meta.get('openvino_auto_precision')} here.",
    "",
    "| engine | precision | "
    + " | ".join(f"images/s, batch {b}" for b in sizes)
    + f" | × TensorFlow fp32 (batch {top}) | class ids = TF fp32 | first call s | peak RSS MB | note |",
    "|---|---|" + "---:|" * len(sizes) + "---:|---:|---|---:|---|",
  ]
  for row in rows:
    precision = row["precision"] + (" (auto)" if row.get("auto") else "")
    if row.get("status") != "measured":
      blanks = " | ".join("" for _ in sizes)
      lines.append(f"| {row['engine']} | {precision} | {blanks} | | | | | {row.get('status')}: {row.get('reason')} |")
      continue
    rates = row["batch_images_per_s"]
    speedup = ""
    if reference and rates.get(top) and reference["batch_images_per_s"].get(top):
      speedup = f"{rates[top] / reference['batch_images_per_s'][top]:.2f}×"
    agreement = "" if row.get("agreement") is None else f"{row['agreement']:.4%}"
    first = ", ".join(f"{v}" for v in (row.get("first_call_s") or {}).values())
    note = "" if row["engine"] == "tensorflow" else ("imports TensorFlow" if row.get("tensorflow_imported") else "")
    lines.append(
      f"| {row['engine']} | {precision} | {' | '.join(str(rates.get(b, '')) for b in sizes)} | {speedup} | "
      f"{agreement} | {first} | {row.get('peak_rss_mb') or ''} | {note} |"
    )
  return lines


def _engine_set(report):
  run = next((r for r in report["runs"] if r.get("mode") == "engine_ceiling"), None)
  return run["set"] if run else "the main set"


def end_to_end_lines(report):
  """The pipeline with default flags against the hand-written programs on the same JPEGs, wall time from process start."""
  rows = report.get("end_to_end") or []
  if not rows:
    return []
  titles = list(rows[0]["baselines"])
  lines = [
    "",
    "End to end on JPEGs, one program after another on the same files, each a fresh process: wall s from "
    "process start to exit (timed part in brackets: the pipeline's `Time:` window, the programs' loop after the "
    "model load); ratios are the program's wall time over the pipeline's (above 1: the pipeline is faster).",
    "",
    "| images | pipeline wall s | "
    + " | ".join(f"{t} wall s" for t in titles)
    + " | "
    + " | ".join(f"pipeline vs {t}" for t in titles)
    + " |",
    "|---:|---:|" + "---:|" * (2 * len(titles)),
  ]
  for row in rows:
    figures = [row["pipeline"]] + [row["baselines"][t] for t in titles]
    walls = " | ".join(f"{f['wall_s']:.1f} ({f['work_s']:.1f})" for f in figures)
    ratios = " | ".join(f"{row['wall_ratio'][t]:.2f}×" for t in titles)
    lines.append(f"| {row['images']:,} | {walls} | {ratios} |")
  short = next((r for r in report["runs"] if r["name"] == report.get("short_run")), None)
  if short:
    lines += [
      "",
      f"Short run: `python -m pipeline.run` on {short['set']} with default flags: {short['wall_s']} s wall "
      f"(`Time:` window {short['work_s']} s), peak RSS {short['peak_rss_mb']} MB.",
    ]
  return lines


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
