"""Do two runs' output folders hold the same results? The proof a behaviour-preserving change owes.

    python scripts/same_outputs.py BEFORE_OUT AFTER_OUT [--allow_new_keys tta]
    scripts/same_outputs.sh BEFORE_COMMIT [AFTER_COMMIT]   (runs the samples at both commits, then this)

Masks embed their input's and their own path, so the two runs must read the
same input paths and write to the same output path (``same_outputs.sh``
moves each run's folder away before the next).

Masks, overlays, polygons and every other file but the run's own bookkeeping
must be equal byte for byte. Stats and failure records are compared record by
record, and ``summary.json`` key by key, after dropping what differs between
any two runs: the run id, times, durations, paths that name the output
folder, and throughput. ``report.html`` and ``run_state.json`` carry times
throughout and are skipped. ``--allow_new_keys`` names summary keys the
change added on purpose (a new flag's value), reported but not counted.
Exits 1 and lists every difference when there is one.
"""

import argparse
import json
import os
import sys

import pyarrow.parquet as parquet

SKIPPED = {"report.html", "run_state.json"}
# Fields that differ between any two runs of the same inputs (ids, clocks, throughput, where the output went).
VOLATILE = {
  "run_id",
  "start_time",
  "end_time",
  "created",
  "io",
  "seconds",
  "elapsed_seconds",
  "images_per_s",
  "mpx_per_s",
  "output",
  "outputs",
  "threads",
  "runtime",
  "ir",
}


def _scrub(value, root: str):
  """``value`` without volatile keys, with the output folder's path replaced by OUT."""
  if isinstance(value, dict):
    return {key: _scrub(item, root) for key, item in value.items() if key not in VOLATILE}
  if isinstance(value, list):
    return [_scrub(item, root) for item in value]
  if isinstance(value, str):
    return value.replace(root, "OUT")
  return value


def _records(path: str) -> list:
  if path.endswith(".parquet"):
    return parquet.read_table(path).to_pylist()
  if path.endswith(".csv"):
    with open(path) as handle:
      return handle.read().splitlines()
  with open(path) as handle:
    return [json.loads(line) for line in handle if line.strip()]


def _files(root: str) -> dict:
  """{relative path with the run id removed: absolute path} of every file under ``root``."""
  found = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      relative = os.path.relpath(path, root)
      if relative in SKIPPED:
        continue
      parts = name.split("-")
      if len(parts) > 3 and parts[0] in ("stats", "failures"):
        relative = os.path.join(os.path.dirname(relative), f"{parts[0]}{os.path.splitext(name)[1]}")
      found[relative] = path
  return found


def _summary_differences(before: dict, after: dict, allowed: set, where: str = "") -> list:
  problems = []
  for key in sorted(set(before) | set(after)):
    here = f"{where}.{key}" if where else key
    if key not in before and key in allowed:
      print(f"summary.json: new key {here} = {after[key]!r} (allowed)")
    elif key not in before or key not in after:
      problems.append(f"summary.json: {here} only in {'after' if key not in before else 'before'}")
    elif isinstance(before[key], dict) and isinstance(after[key], dict):
      problems += _summary_differences(before[key], after[key], allowed, here)
    elif before[key] != after[key]:
      problems.append(f"summary.json: {here} differs: {before[key]!r} -> {after[key]!r}")
  return problems


def differences(before_root: str, after_root: str, allowed: set = frozenset()) -> list:
  """Every difference between the two folders, as one line each (empty when they hold the same results)."""
  before, after = _files(before_root), _files(after_root)
  problems = [f"{path}: only in {'after' if path in after else 'before'}" for path in sorted(set(before) ^ set(after))]
  for path in sorted(set(before) & set(after)):
    if path == "summary.json":
      with open(before[path]) as b, open(after[path]) as a:
        problems += _summary_differences(
          _scrub(json.load(b), before_root), _scrub(json.load(a), after_root), set(allowed)
        )
    elif path.startswith(("stats", "failures")):
      if [_scrub(r, before_root) for r in _records(before[path])] != [
        _scrub(r, after_root) for r in _records(after[path])
      ]:
        problems.append(f"{path}: records differ")
    else:
      with open(before[path], "rb") as b, open(after[path], "rb") as a:
        if b.read() != a.read():
          problems.append(f"{path}: bytes differ")
  return problems


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("before")
  parser.add_argument("after")
  parser.add_argument("--allow_new_keys", nargs="*", default=[], help="summary keys the change added on purpose")
  args = parser.parse_args(argv)
  problems = differences(os.path.abspath(args.before), os.path.abspath(args.after), set(args.allow_new_keys))
  for line in problems:
    print(line)
  count = len(_files(args.before))
  print(f"{args.before} vs {args.after}: {count} files compared, {len(problems)} differences")
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())
