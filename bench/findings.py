"""What the benchmark's runs add up to: ratios to the model's ceiling, the steady-state fit and the targets.

Pure arithmetic on the run records ``bench.harness`` writes, so it is tested
on made-up records without running anything.
"""


def ratio(run, ceiling):
  """A run's images/s over the ceiling's, or None when either has no rate."""
  if run.get("images_per_s") and ceiling and ceiling.get("images_per_s"):
    return round(run["images_per_s"] / ceiling["images_per_s"], 3)
  return None


def steady_state(linearity):
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


def targets(report, ceiling):
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
  found = {}
  if ceiling and best_pipeline:
    value = ratio(best_pipeline, ceiling)
    found["pipeline >= 0.85 x ceiling, default model, 512x512"] = {
      "value": value,
      "run": best_pipeline["name"],
      "met": value is not None and value >= 0.85,
    }
  if best_pipeline and naive:
    value = round(best_pipeline["images_per_s"] / naive["images_per_s"], 3)
    found[">= 2 x naive loop"] = {"value": value, "met": value >= 2}
  if best_pipeline and stock:
    value = round(best_pipeline["images_per_s"] / stock["images_per_s"], 3)
    found[">= 1 x stock RunInference"] = {"value": value, "met": value >= 1}
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
      found["linear in images (4x->16x marginal rate within 25 % of the fit)"] = {
        "value": round(worst, 3),
        "met": worst <= 0.25,
      }
  if large:
    peak = max(p["peak_rss_mb"] for p in large)
    found["< 2 GB per process on large images"] = {"value_mb": peak, "met": peak < 2048}
  found.update(engine_targets(report))
  return found


def _target(value, threshold, note=None, below=False):
  """A target's record; ``met`` is None when there is no value to judge (the note says why)."""
  if value is None:
    return {"value": None, "met": None, "note": note or "not measured"}
  record = {"value": value, "met": value < threshold if below else value >= threshold}
  if note:
    record["note"] = note
  return record


def _rate(rows, engine, precision, batch_size):
  """(images/s of an engine row at a batch size, or None; why not)."""
  row = next((r for r in rows if r["engine"] == engine and r["precision"] == precision), None)
  if row is None:
    return None, f"{engine} {precision} not in the run"
  if row.get("status") != "measured":
    return None, f"{engine} {precision} {row.get('status')}: {row.get('reason')}"
  rate = row["batch_images_per_s"].get(str(batch_size))
  return rate, None if rate else f"{engine} {precision} not measured at batch {batch_size}"


def _over(rows, numerator, denominator, batch_size):
  top, why_top = _rate(rows, *numerator, batch_size)
  bottom, why_bottom = _rate(rows, *denominator, batch_size)
  if top is None or bottom is None:
    return None, why_top or why_bottom
  return round(top / bottom, 3), None


def pipeline_precision(report):
  """The OpenVINO precision the pipeline's own runs reported (summary.json ``engine``), else auto's."""
  for run in report["runs"]:
    engine = (run.get("detail") or {}).get("engine")
    if run.get("mode") in ("pipeline", "e2e", "short") and isinstance(engine, dict) and engine.get("precision"):
      return engine.get("engine"), engine["precision"]
  return "openvino", report["meta"].get("openvino_auto_precision")


def steady_rate(report):
  """(steady-state pipeline images/s, where it comes from): the in-memory linearity fit, else the
  marginal rate between the two end-to-end counts' ``Time:`` windows (start-up cancels out)."""
  fit = report.get("steady_state", {}).get("in-memory")
  if fit and fit.get("steady_images_per_s"):
    return fit["steady_images_per_s"], "in-memory linearity fit"
  rows = report.get("end_to_end") or []
  if len(rows) >= 2 and rows[-1]["images"] > rows[0]["images"]:
    extra = rows[-1]["pipeline"]["work_s"] - rows[0]["pipeline"]["work_s"]
    if extra > 0:
      return round((rows[-1]["images"] - rows[0]["images"]) / extra, 3), "end-to-end marginal rate"
  return None, "no linearity runs and fewer than two end-to-end counts"


def engine_targets(report):
  """The CPU engine targets: the model alone per engine, end to end against the hand-written programs, a short run."""
  rows = report.get("engines") or []
  auto = report["meta"].get("openvino_auto_precision") or "fp32"
  found = {}
  value, why = _over(rows, ("openvino", auto), ("tensorflow", "fp32"), 16)
  found[f"model alone: OpenVINO auto ({auto}) >= 2.0 x TensorFlow fp32, batch 16"] = _target(value, 2.0, why)
  value, why = _over(rows, ("openvino", "int8"), ("tensorflow", "fp32"), 16)
  found["model alone: OpenVINO int8 >= 2.5 x TensorFlow fp32, batch 16 (stretch)"] = _target(value, 2.5, why)
  end_to_end = {row["images"]: row for row in report.get("end_to_end") or []}
  counts = sorted(end_to_end)
  wanted = []
  if counts:
    large, small = counts[-1], counts[0]
    wanted = [(large, "TF loop", 1.8), (large, "tf.data", 1.6), (large, "OpenVINO loop", 1.0), (small, "TF loop", 1.5)]
  for count, baseline, threshold in dict.fromkeys(wanted):
    value = end_to_end[count]["wall_ratio"].get(baseline)
    found[f"pipeline >= {threshold} x {baseline}, {count:,} JPEGs (wall, process start included)"] = _target(
      value, threshold
    )
  engine, precision = pipeline_precision(report)
  steady, source = steady_rate(report)
  ceiling, why = _rate(rows, engine or "openvino", precision, 8)
  value = round(steady / ceiling, 3) if steady and ceiling else None
  name = f"steady-state pipeline >= 0.85 x its engine's ceiling ({engine} {precision}, batch 8)"
  found[name] = _target(value, 0.85, source if steady is None or value is not None else why)
  short = next((r for r in report["runs"] if r["name"] == report.get("short_run")), None)
  if short:
    found[f"{short['images']}-image run of the bundled model < 5 s wall (process start included)"] = _target(
      short["wall_s"], 5.0, below=True
    )
  return found
