"""The ``io`` block of summary.json: shuffle, read and written bytes of a finished run.

The pipeline writes ``summary.json`` from inside the job, where Beam's metrics
are not readable; the launcher reads them from the finished run's result
(``transforms.accounting.io_block``) and adds the sizes of the stats and
failure files, then rewrites ``summary.json`` in place, as the drift check does.
A runner that reports no metrics leaves the summary as it was.
"""

import json
import logging

from apache_beam.io.filesystems import FileSystems

from transforms.accounting import io_block
from transforms.records import SUMMARY_FILE
from transforms.sinks import atomic_write, join, remove_temp_dir

_LOG = logging.getLogger("deconvseg")


def _file_bytes(paths) -> int:
  total = 0
  for path in paths or []:
    try:
      total += sum(m.size_in_bytes for m in FileSystems.match([path])[0].metadata_list)
    except Exception:  # an output that vanished is not worth failing a run
      continue
  return total


def add_io(output: str, summary: dict, result) -> dict:
  """``summary`` with ``io`` from ``result``'s metrics, written back to OUT/summary.json."""
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
  summary = dict(summary, io=block)
  rewrite_summary(output, summary)
  return summary


def rewrite_summary(output: str, summary: dict):
  """Replaces OUT/summary.json of a finished run with ``summary`` (a block added after the run: io, drift)."""
  document = json.dumps(summary, indent=2, ensure_ascii=False).encode("utf-8")
  atomic_write(output, join(output, SUMMARY_FILE), document, "application/json")
  remove_temp_dir(output)
