#!/usr/bin/env bash
# Segment images with deconvseg. Sets up ./.venv from requirements.lock on first use.
#
#   ./run_pipeline.sh                      # the bundled samples -> ./output (bundled model)
#   ./run_pipeline.sh --input 'photos/*.jpg' --output results [any pipeline or Beam flag]
#   ./run_pipeline.sh --help
#   DECONVSEG_EXTRAS=geo ./run_pipeline.sh ...   # also install an extra (geo: GeoTIFF masks, --polygons)
#
# With arguments, relative paths are taken from the directory you run it in.
set -euo pipefail
caller_dir="$(pwd)"
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$repo_dir"
source scripts/bootstrap.sh "${DECONVSEG_EXTRAS:-}"  # explicit: a bare `source` would hand it our arguments
export PYTHONPATH="$repo_dir${PYTHONPATH:+:$PYTHONPATH}"

if [ "$#" -eq 0 ]; then
  set -- --input 'samples/images/*' --output ./output
  if compgen -G 'samples/shards/*.tfrecord*' >/dev/null; then
    set -- "$@" --tfrecord 'samples/shards/*.tfrecord*'
  fi
  echo "deconvseg: no arguments given; segmenting the bundled samples: $*" >&2
else
  cd "$caller_dir"
fi
exec "$PYTHON" -m pipeline.run "$@"
