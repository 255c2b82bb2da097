"""The ``io`` block of summary.json: shuffle, read and written bytes of a finished run.

The pipeline writes ``summary.json`` from inside the job, where Beam's metrics
are not readable; the launcher reads them from the finished run's result
(``transforms.accounting.io_block``) and adds the sizes of the stats and
failure files. It composes the final summary (this block, then the drift
check's) in memory and writes ``summary.json`` once (``pipeline.run``). A
runner that reports no metrics leaves the summary as it was.
"""

import logging
from collections.abc import Iterable
from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms.accounting import io_block

_LOG = logging.getLogger("deconvseg")


def _file_bytes(paths: Iterable[str] | None) -> int:
  total = 0
  for path in paths or []:
    try:
      total += sum(m.size_in_bytes for m in FileSystems.match([path])[0].metadata_list)
    except Exception:  # an output that vanished is not worth failing a run
      continue
  return total


def with_io(summary: dict[str, Any], result: Any) -> dict[str, Any]:
  """``summary`` with ``io`` from ``result``'s metrics (a new dict; nothing is written)."""
  outputs = summary.get("outputs") or {}
  try:
    block = io_block(
      result, {"stats": _file_bytes(outputs.get("stats")), "failures": _file_bytes(outputs.get("failures"))}
    )
  except Exception as exc:  # the run itself succeeded
    _LOG.warning("could not read the run's byte metrics: %s", exc)
    return summary
  if block is None:
    _LOG.info("the runner reported no byte metrics; summary.json has no io block")
    return summary
  return dict(summary, io=block)
