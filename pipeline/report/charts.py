"""Chart geometry: where each bar, box and cell goes.

Only numbers live here; ``templates/charts.html.j2`` turns them into inline
SVG (and the confusion matrix into a shaded table), so every label passes
through the template's escaping. Bars carry their exact value in
``data-value`` so tests and readers can check the picture against the data.
"""

import dataclasses
from collections.abc import Sequence

from pipeline.report import load
from pipeline.report.aggregate import FRACTION_BINS, FractionDistribution, pixels_of


@dataclasses.dataclass
class Bar:
  info: load.ClassInfo
  pixels: float
  share: float  # of all pixels
  y: int  # top of the row
  length: float  # bar length in px


@dataclasses.dataclass
class BarChart:
  """Horizontal bars of total pixels per class."""

  bars: list[Bar]
  width: int = 900
  label_width: int = 150
  row: int = 30

  @property
  def height(self) -> int:
    return self.row * len(self.bars) + 10


def bar_chart(classes: Sequence[load.ClassInfo], totals: dict[str, load.ClassTotal]) -> BarChart:
  chart = BarChart([])
  plot_width = chart.width - chart.label_width - 190  # 190 px right of the longest bar for its label
  largest = max([pixels_of(totals, info.name) for info in classes] + [0.0])
  all_pixels = sum(pixels_of(totals, info.name) for info in classes)
  for index, info in enumerate(classes):
    pixels = pixels_of(totals, info.name)
    chart.bars.append(
      Bar(
        info,
        pixels,
        pixels / all_pixels if all_pixels else 0.0,
        5 + index * chart.row,
        plot_width * pixels / largest if largest else 0.0,
      )
    )
  return chart


@dataclasses.dataclass
class Box:
  """One class's row: histogram bins (x, height) and a box plot (quartiles, whiskers = min/max, mean dot)."""

  info: load.ClassInfo
  y: int
  middle: float
  distribution: FractionDistribution | None = None  # None when the class has no images
  bins: list[tuple[float, float, float]] = dataclasses.field(default_factory=list)  # (x, top, height)
  q1: float = 0.0
  median: float = 0.0
  q3: float = 0.0


@dataclasses.dataclass
class DistributionChart:
  """Per class: histogram of per-image fractions as a density strip, with a box plot on top."""

  boxes: list[Box]
  width: int = 900
  label_width: int = 150
  right: int = 150
  row: int = 44
  top: int = 24

  @property
  def plot_width(self) -> int:
    return self.width - self.label_width - self.right

  @property
  def height(self) -> int:
    return self.top + self.row * len(self.boxes) + 24

  @property
  def bin_width(self) -> float:
    return self.plot_width / FRACTION_BINS

  def x(self, fraction: float) -> float:
    return self.label_width + self.plot_width * fraction

  def ticks(self) -> list[tuple[float, int]]:
    """(x, percent) of the vertical grid lines."""
    return [(self.x(tick / 100), tick) for tick in range(0, 101, 10)]


def distribution_chart(
  classes: Sequence[load.ClassInfo], distributions: dict[str, FractionDistribution]
) -> DistributionChart:
  chart = DistributionChart([])
  for index, info in enumerate(classes):
    y = chart.top + index * chart.row
    box = Box(info, y, y + chart.row / 2)
    chart.boxes.append(box)
    distribution = distributions.get(info.name)
    if distribution is None or not distribution.n:
      continue
    box.distribution = distribution
    peak = max(distribution.counts)
    for bin_index, count in enumerate(distribution.counts):
      if count:
        height = (chart.row - 8) * count / peak
        box.bins.append((chart.label_width + bin_index * chart.bin_width, y + chart.row - 4 - height, height))
    box.q1, box.median, box.q3 = (distribution.quantile(q) for q in (0.25, 0.5, 0.75))
  return chart


@dataclasses.dataclass
class HeatmapRow:
  name: str
  total: float
  cells: list[tuple[float, float, str, bool]]  # (count, share of the row, text colour, on the diagonal)


def confusion_rows(confusion: Sequence[Sequence[float]], classes: Sequence[load.ClassInfo]) -> list[HeatmapRow]:
  """Rows = truth, columns = predicted; each cell shaded by its share of the row."""
  names = [info.name for info in classes]
  rows: list[HeatmapRow] = []
  for index, counts in enumerate(confusion):
    total = sum(counts)
    cells: list[tuple[float, float, str, bool]] = []
    for column, count in enumerate(counts):
      share = count / total if total else 0.0
      cells.append((count, share, "#fff" if share > 0.55 else "#222", column == index))
    rows.append(HeatmapRow(names[index] if index < len(names) else str(index), total, cells))
  return rows
