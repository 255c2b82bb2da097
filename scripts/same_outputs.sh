#!/usr/bin/env bash
# Does a change keep the sample run's outputs byte for byte?  scripts/same_outputs.sh BEFORE_COMMIT [AFTER_COMMIT]
# Runs the bundled samples (images + TFRecord shard) at each commit in three configurations (default; --overlays
# with CSV stats; --polygons with Parquet stats on 256-px tiles), fp32 so any CPU gives the same masks, from one
# checkout path and one output path (masks embed both), then compares with scripts/same_outputs.py.
# AFTER_COMMIT defaults to HEAD. Needs ./.venv (./run_tests.sh makes it). About 2 minutes per commit on 2 cores.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
before="$(git -C "$repo" rev-parse "$1")"
after="$(git -C "$repo" rev-parse "${2:-HEAD}")"
work="${SAME_OUTPUTS_DIR:-${TMPDIR:-/tmp}/deconvseg-same-outputs}"
python="$repo/.venv/bin/python"
rm -rf "$work" && mkdir -p "$work"
git clone -q "$repo" "$work/checkout"
export PYTHONPATH="$work/checkout" TF_CPP_MIN_LOG_LEVEL=2 NO_GCE_CHECK=true
for name in before after; do
  commit="$before"; [ "$name" = after ] && commit="$after"
  git -C "$work/checkout" checkout -q "$commit"
  (
    cd "$work/checkout"
    common=(--input 'samples/images/*' --tfrecord 'samples/shards/*.tfrecord*' --precision fp32)
    "$python" -m pipeline.run "${common[@]}" --output "$work/out/default" > "$work/$name-default.log" 2>&1
    "$python" -m pipeline.run "${common[@]}" --output "$work/out/overlays_csv" --overlays --stats_format csv \
      > "$work/$name-overlays_csv.log" 2>&1
    "$python" -m pipeline.run "${common[@]}" --output "$work/out/polygons_parquet" --polygons --stats_format parquet \
      --tile_size 256 --batch_size 4 > "$work/$name-polygons_parquet.log" 2>&1
  )
  mv "$work/out" "$work/$name"
done
status=0
for config in default overlays_csv polygons_parquet; do
  "$python" "$repo/scripts/same_outputs.py" "$work/before/$config" "$work/after/$config" \
    ${SAME_OUTPUTS_ALLOW:+--allow_new_keys $SAME_OUTPUTS_ALLOW} || status=1
done
exit $status
