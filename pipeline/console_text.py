"""What the launcher tells people in words: the engine in its first log line, the table at the end of a local run.

Apart from the launcher (``pipeline.run``) because this is presentation
only: it reads a finished ``summary.json`` or an engine's description and
decides nothing about the run.
"""

from typing import Any


def format_summary(summary: dict[str, Any], output: str, seconds: float | None = None, report: bool = True) -> str:
  """The per-class table printed at the end of local runs."""
  counts = summary["counts"]
  options = summary.get("options") or {}
  folders = (
    ["masks/"] + [f"{name}/" for name in ("overlays", "polygons") if options.get(name)] + ["stats/", "failures/"]
  )
  lines = [
    f"Results in {output}: {', '.join(folders)}, summary.json" + (", report.html" if report else ""),
    f"Images: {counts['read']} read, {counts['segmented']} segmented, {counts['failed']} failed"
    + (
      f" ({', '.join(f'{k}: {v}' for k, v in summary.get('failed_by_stage', {}).items())})" if counts["failed"] else ""
    ),
  ]
  if seconds:
    lines.append(
      f"Time: {seconds:.2f} s, {counts['segmented'] / seconds:.2f} images/s, "
      f"{summary['pixels'] / 1e6 / seconds:.2f} Mpx/s"
    )
  unit = summary.get("area_unit")
  show_area = summary.get("images_with_area") and isinstance(unit, str)
  header = f"{'class':<16}{'pixels':>14}{'share':>9}" + (f"{'area (' + str(unit) + ')':>18}" if show_area else "")
  lines += ["", header, "-" * len(header)]
  for entry in summary["classes"]:
    row = f"{entry['name'][:15]:<16}{entry['pixels']:>14,}{entry['fraction'] * 100:>8.2f}%"
    if show_area:
      row += f"{entry['area']:>18,.1f}"
    lines.append(row)
  return "\n".join(lines)


def describe_engine(description: dict[str, Any] | None) -> str:
  """'openvino fp32 (OpenVINO 2026.4, 2 threads) on AMD EPYC [avx2]': the run's first log line names it."""
  if not description:
    return "an engine resolved by each worker"
  cpu = description.get("cpu") or {}
  threads = description.get("threads")
  details = ", ".join(str(part) for part in (description.get("runtime"), threads and f"threads: {threads}") if part)
  flags = " ".join(cpu.get("flags") or []) or "no AVX-512/AMX"
  return f"{description['engine']} {description['precision']} ({details}) on {cpu.get('name')} [{flags}]"
