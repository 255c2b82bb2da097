"""The run's final ``summary.json``: the job's summary plus the launcher's ``io`` and ``drift`` blocks.

The job writes ``summary.json`` as its last step (``transforms.record_files``),
because a Dataflow job launched from a template or without blocking has no
launcher waiting for it. What only the end of the run can know is added here:
the ``io`` block (shuffle, read and written bytes, from Beam's metrics, which
the job cannot read, plus the sizes of the stats and failure files) and the
``drift`` block (``pipeline.post_run.drift``). ``finish`` reads the job's
summary once, composes the final one in memory and writes it once,
atomically, or not at all when nothing was added. ``python -m pipeline.drift``
adds a drift block afterwards through the same ``finish``.
"""

import json
import logging
from collections.abc import Iterable
from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms.accounting import io_block
from transforms.imaging.records import SUMMARY_FILE
from transforms.record_files import store_summary

_LOG = logging.getLogger("deconvseg")


def read_job_summary(output: str) -> dict[str, Any]:
  """OUT/summary.json as the job wrote it (raises when it is missing or not JSON)."""
  with FileSystems.open(FileSystems.join(output, SUMMARY_FILE), compression_type="uncompressed") as handle:
    return json.loads(handle.read().decode("utf-8"))


def finish(output: str, job_summary: dict[str, Any], **blocks: dict[str, Any] | None) -> dict[str, Any]:
  """``job_summary`` with ``blocks`` (those not None) added, written as OUT/summary.json once; returns it.

  Nothing is written when every block is None: the job's file already says it all.
  """
  added = {name: block for name, block in blocks.items() if block is not None}
  if not added:
    return job_summary
  return store_summary(output, dict(job_summary, **added))


def _file_bytes(paths: Iterable[str] | None) -> int:
  total = 0
  for path in paths or []:
    try:
      total += sum(m.size_in_bytes for m in FileSystems.match([path])[0].metadata_list)
    except Exception:  # an output that vanished is not worth failing a run
      continue
  return total


def io_of(summary: dict[str, Any], result: Any) -> dict[str, Any] | None:
  """The ``io`` block of a finished run from ``result``'s metrics; None when the runner reports none."""
  outputs = summary.get("outputs") or {}
  try:
    block = io_block(
      result, {"stats": _file_bytes(outputs.get("stats")), "failures": _file_bytes(outputs.get("failures"))}
    )
  except Exception as exc:  # the run itself succeeded
    _LOG.warning("could not read the run's byte metrics: %s", exc)
    return None
  if block is None:
    _LOG.info("the runner reported no byte metrics; summary.json has no io block")
  return block
