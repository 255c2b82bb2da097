"""How a number looks on the page: counts, scores, shares, durations and byte sizes, with "–" for a missing one.

Apart from ``pipeline.report.render`` because both the templates (as Jinja2
filters) and the section builders (``pipeline.report.sections``) format
numbers, and they must agree.
"""

from typing import Any

from pipeline.report.run_records import number


def format_count(value: float | None) -> str:
  return "–" if value is None else f"{int(round(value)):,}"


def format_number(value: float | None, digits: int = 3) -> str:
  if value is None:
    return "–"
  return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


def format_fixed(value: float | None) -> str:
  """Scores in [0, 1] with a fixed three decimals, so a column of them lines up."""
  return "–" if value is None else f"{value:.3f}"


def format_percent(value: float | None, digits: int = 1) -> str:
  return "–" if value is None else f"{100.0 * value:.{digits}f}%"


def format_duration(seconds: Any) -> str:
  if seconds is None:
    return "–"
  seconds = float(seconds)
  if seconds < 60:
    return f"{seconds:.1f} s"
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours} h {minutes:02d} min {seconds:02d} s" if hours else f"{minutes} min {seconds:02d} s"


def format_bytes(value: Any) -> str:
  value = number(value)
  if value is None:
    return "–"
  for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if abs(value) >= scale:
      return f"{value / scale:,.2f} {unit}"
  return f"{int(value):,} B"
