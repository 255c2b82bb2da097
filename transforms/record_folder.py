"""The records of a whole output folder: one stats and one failures file per run, never two records of one mask.

Each run writes its records to files named by its run id
(``OUT/stats/stats-<run id>-00000-of-00001.jsonl``), so no run can delete or
truncate the records of another one, not even a ``--force_unlock`` run that
overlaps a live one. What keeps the folder free of duplicates is
``supersede``, the last thing a finished run does before its summary: every
record of an earlier file that this run has replaced (the same mask key, or
the same input URI) is removed from that file, which is rewritten whole or
deleted when nothing is left in it. A record is only ever removed because
this run holds one for the same image, so a crash at any point can leave a
duplicate for the next run to remove, never a mask without a record.

Reading the folder (``folder_files``) therefore gives every mask its record:
the union of the files under ``stats/``, in any of the three formats.
"""

import csv
import io
import json
import logging
import posixpath
from collections.abc import Callable, Collection, Iterable
from typing import Any, Optional, Tuple, cast

from apache_beam.io.filesystems import FileSystems

from model.text import one_line
from transforms.imaging.records import FAILURES_DIR, STATS_DIR
from transforms.out_files import join, write_atomically

_LOG = logging.getLogger(__name__)
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"  # Beam's: the run id, then shard numbers
FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_MIME = {"jsonl": "application/x-ndjson", "csv": "text/csv", "parquet": "application/octet-stream"}


def file_prefix(output: str, folder: str, run_id: str) -> str:
  """``OUT/<folder>/<folder's noun>-<run id>``: Beam adds the shard numbers and the suffix."""
  noun = "stats" if folder == STATS_DIR else "failures"
  return join(output, folder, f"{noun}-{run_id}" if run_id else noun)


def file_format(path: str) -> Optional[str]:
  """ "jsonl", "csv" or "parquet" by the name's suffix; None for anything else (temporaries, other files)."""
  return FORMATS.get(posixpath.splitext(path)[1])


def folder_files(output: str, folder: str = STATS_DIR) -> list[str]:
  """Every finished record file of every run in ``OUT/<folder>``, sorted (run ids start with their time)."""
  noun = "stats" if folder == STATS_DIR else "failures"
  try:
    found = FileSystems.match([join(output, folder, f"{noun}*")])[0].metadata_list
  except Exception:  # no folder yet
    return []
  return sorted(meta.path for meta in found if file_format(meta.path))


def _read_bytes(path: str) -> bytes:
  with FileSystems.open(path, compression_type="uncompressed") as handle:
    return handle.read()


def read_rows(path: str) -> Tuple[list[dict[str, Any]], Callable[[list[bool]], bytes]]:
  """(rows, write) for one record file: its rows as dicts, and how to write a subset of them back."""
  kind = file_format(path)
  data = _read_bytes(path)
  if kind == "parquet":
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))

    def write_parquet(keep: list[bool]) -> bytes:
      buffer = io.BytesIO()
      pq.write_table(table.filter(pa.array(keep, type=pa.bool_())), buffer)
      return buffer.getvalue()

    rows: list[dict[str, Any]] = [
      {"uri": uri, "key": key} for uri, key in zip(table.column("uri").to_pylist(), _keys(table))
    ]
    return rows, write_parquet
  text = data.decode("utf-8")
  if kind == "csv":
    parsed = list(csv.reader(io.StringIO(text)))
    header, body = (parsed[0], parsed[1:]) if parsed else ([], [])
    rows = [dict(zip(header, row)) for row in body]

    def write_csv(keep: list[bool]) -> bytes:
      buffer = io.StringIO()
      writer = csv.writer(buffer, lineterminator="\n")
      writer.writerows([header] + [row for row, kept in zip(body, keep) if kept])
      return buffer.getvalue().encode("utf-8")

    return rows, write_csv
  lines = text.splitlines()
  rows = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      row = None
    rows.append(row if isinstance(row, dict) else {})  # an unreadable line is kept: it is no one's to drop

  def write_jsonl(keep: list[bool]) -> bytes:
    return "".join(line + "\n" for line, kept in zip(lines, keep) if kept).encode("utf-8")

  return rows, write_jsonl


def _keys(table: Any) -> list[Any]:
  return table.column("key").to_pylist() if "key" in table.column_names else [None] * table.num_rows


def _identities(paths: Iterable[str]) -> Tuple[set[str], set[str]]:
  uris: set[str] = set()
  keys: set[str] = set()
  for path in paths:
    rows, _ = read_rows(path)
    for row in rows:
      if row.get("uri"):
        uris.add(row["uri"])
      if row.get("key"):
        keys.add(row["key"])
  return uris, keys


def _prune(path: str, replaced: Callable[[dict[str, Any]], bool]) -> int:
  """Removes the rows ``replaced(row)`` names from ``path`` (whole rewrite, or delete); returns how many."""
  try:
    rows, write = read_rows(path)
  except FileNotFoundError:  # another run's supersede got there first
    return 0
  except Exception as exc:
    _LOG.warning("left %s as it is: cannot read it as records (%s)", path, one_line(exc, 200))
    return 0
  keep = [not replaced(row) for row in rows]
  removed = keep.count(False)
  if not removed:
    return 0
  if any(keep):
    write_atomically(path, write(keep), _MIME[cast(str, file_format(path))])  # folder_files lists record files only
  else:
    FileSystems.delete([path])
  return removed


def supersede(output: str, own_stats: Collection[str], own_failures: Collection[str]) -> int:
  """Drops from other runs' files every record this run replaced; returns how many were dropped.

  A stats record is replaced when this run wrote (or reused) a record with
  its mask key or its input URI (a failure does not replace it: the earlier
  mask is still there); a failure record when this run read its URI again,
  whatever the outcome. ``own_stats``/``own_failures`` are this
  run's files, which are never touched.
  """
  own = set(own_stats) | set(own_failures)
  stats_uris, stats_keys = _identities(own_stats)
  failure_uris, _ = _identities(own_failures)
  read_uris = stats_uris | failure_uris
  removed = files = 0
  for folder, replaced in (
    # not by a failure: the earlier mask is still on disk and keeps its record
    (STATS_DIR, lambda row: row.get("key") in stats_keys or row.get("uri") in stats_uris),
    (FAILURES_DIR, lambda row: row.get("uri") in read_uris or row.get("key") in stats_keys),
  ):
    for path in folder_files(output, folder):
      if path in own:
        continue
      count = _prune(path, replaced)
      removed += count
      files += bool(count)
  if removed:
    _LOG.info("%d records of earlier runs replaced by this run were removed from %d files", removed, files)
  return removed
