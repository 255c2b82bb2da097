"""Write the HTML report of a finished run: ``python -m pipeline.report OUT``.

The launcher writes ``OUT/report.html`` after local runs; this rebuilds it,
e.g. after a Dataflow job or with another gallery size.
"""

import argparse
import logging
import sys
from collections.abc import Sequence

from pipeline.report.load import incomplete_run
from pipeline.report.render import DEFAULT_MAX_GALLERY, DEFAULT_THUMBNAIL_SIZE, write_report


def main(argv: Sequence[str] | None = None) -> int:
  """Exit status 0 with the report's path on stdout; 2 when OUTPUT is not a run's output directory."""
  parser = argparse.ArgumentParser(
    prog="python -m pipeline.report", description="One self-contained HTML page that shows what a segmentation run did."
  )
  parser.add_argument("output", help="the run's --output directory (local path or gs://...)")
  parser.add_argument("--out", help="where to write the report (default: OUTPUT/report.html)")
  parser.add_argument(
    "--max_gallery",
    type=int,
    default=DEFAULT_MAX_GALLERY,
    help="number of sample images in the gallery (default %(default)s)",
  )
  parser.add_argument(
    "--thumbnail_size",
    type=int,
    default=DEFAULT_THUMBNAIL_SIZE,
    help="longest edge of gallery thumbnails in pixels (default %(default)s)",
  )
  args = parser.parse_args(argv)
  if args.max_gallery < 0 or args.thumbnail_size < 16:
    parser.error("--max_gallery must be >= 0 and --thumbnail_size >= 16")
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  try:
    path = write_report(args.output, args.out, args.max_gallery, args.thumbnail_size)
  except FileNotFoundError as error:
    # A run stopped before its summary and stats leaves only masks: say why rather than "not a run".
    print(f"deconvseg report: error: {incomplete_run(args.output) or error}", file=sys.stderr)
    return 2
  print(path)
  return 0
