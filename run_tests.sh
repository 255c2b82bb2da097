#!/usr/bin/env bash
# The test command: sets up ./.venv from requirements.lock on first use, then runs pytest.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k pipeline -x (a later -n overrides the worker count)
# --fast leaves out the tests marked slow (pytest -m "not slow": training, clusters and emulator-heavy
# end-to-end runs, large images; see pytest.ini). Without it everything runs, as CI does.
set -euo pipefail
cd "$(dirname "$0")"
pytest_args=()
for arg in "$@"; do
  case "$arg" in
    --fast) pytest_args=(-m "not slow" ${pytest_args[@]+"${pytest_args[@]}"}) ;;  # first, so a later -m wins
    *) pytest_args+=("$arg") ;;
  esac
done
source scripts/bootstrap.sh test
# One style (ruff.toml): formatting and lint, before anything slow.
"$PYTHON" -m ruff format --check --quiet . || { echo "run_tests.sh: formatting differs; run: $PYTHON -m ruff format ." >&2; exit 1; }
"$PYTHON" -m ruff check --quiet .
# Layering: pipeline -> transforms -> model, never back, and transforms/imaging never imports Beam (.importlinter).
"$PYTHON" -c "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename='.importlinter', no_cache=True, no_logo=True))"
# Types: every function in model/, transforms/ and pipeline/ is annotated and checked (mypy.ini).
"$PYTHON" -m mypy
# The suite is mostly single-threaded (one core busy on average), so test files are spread over up to 4
# processes (pytest-xdist; a file's tests stay together, so its module fixtures are built once). -n 0, or
# DECONVSEG_TEST_WORKERS=0, runs them in this process (pdb, -s).
workers="${DECONVSEG_TEST_WORKERS:-$(nproc 2>/dev/null || echo 2)}"
[ "$workers" -gt 4 ] && workers=4
exec "$PYTHON" -m pytest -n "$workers" --dist loadfile ${pytest_args[@]+"${pytest_args[@]}"}
