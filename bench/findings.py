"""What the benchmark's runs add up to: ratios to the model's ceiling, the steady-state fit and the issue's targets.

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
  return found
