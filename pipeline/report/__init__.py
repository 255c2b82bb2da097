"""One self-contained HTML page that shows what a segmentation run did.

People judge a run by looking at it, so this turns the run's output directory
(``summary.json``, ``stats/``, ``masks/``, ``failures/``) into
``OUT/report.html``: the run summary and the model's test metrics, per-class
area totals as a bar chart, the distribution of per-image class fractions, a
gallery of images with their masks blended over them, and the failures table.
When the run was scored against ground truth (``--truth``, or afterwards
``python -m pipeline.evaluate``, whose ``evaluation.json`` then wins), it also
shows the run's confusion matrix as a heatmap and the worst images first.
Images the out-of-distribution check flagged (``transforms.imaging.ood``) are listed
with their reasons and thumbnails; a ``--compare_to`` run's drift block, and
the bytes the run moved, get a table each.

The work is split the way data flows through it:

- ``load``: reading the output directory (files and their rows);
- ``run_records``: the records read from them and their fields;
- ``aggregate``: the numbers, in one constant-memory pass over the records;
- ``gallery``: thumbnails and overlays as ``data:`` URIs;
- ``charts``: chart geometry;
- ``sections`` and ``formats``: what each section of the page shows, and how a number looks;
- ``render``: the Jinja2 templates in ``templates/`` filled in;
- ``cli``: ``python -m pipeline.report OUT [--out PATH] [--max_gallery N] [--thumbnail_size PX]``.
"""

from pipeline.report.aggregate import FRACTION_BINS
from pipeline.report.cli import main
from pipeline.report.load import EVALUATION_FILE, SUMMARY_FILE
from pipeline.report.render import (
  DEFAULT_MAX_GALLERY,
  DEFAULT_THUMBNAIL_SIZE,
  MAX_FAILURE_ROWS,
  MAX_FLAGGED_IMAGES,
  MAX_MESSAGE_CHARS,
  MAX_WORST_IMAGES,
  REPORT_NAME,
  build_report,
  write_report,
)

__all__ = [
  "DEFAULT_MAX_GALLERY",
  "DEFAULT_THUMBNAIL_SIZE",
  "EVALUATION_FILE",
  "FRACTION_BINS",
  "MAX_FAILURE_ROWS",
  "MAX_FLAGGED_IMAGES",
  "MAX_MESSAGE_CHARS",
  "MAX_WORST_IMAGES",
  "REPORT_NAME",
  "SUMMARY_FILE",
  "build_report",
  "main",
  "write_report",
]
