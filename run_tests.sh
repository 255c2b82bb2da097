#!/usr/bin/env bash
# The test command: sets up ./.venv from requirements.lock on first use, then runs pytest.
# Extra arguments go to pytest, e.g. ./run_tests.sh -k pipeline -x
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh test
exec "$PYTHON" -m pytest "$@"
