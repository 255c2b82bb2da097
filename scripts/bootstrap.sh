# Sourced by run_tests.sh and run_pipeline.sh: make sure a Python environment
# with the pinned dependencies exists, then export PYTHON pointing at it.
#
# Order of preference:
#   1. an already active virtualenv that imports everything we need;
#   2. ./.venv, created (or refreshed when requirements.lock / setup.py change)
#      from requirements.lock.
# Usage: source scripts/bootstrap.sh [EXTRAS]   (EXTRAS e.g. "test", or "geo"; "test" includes "geo")

_ds_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_ds_extras="${1:-}"
_ds_spec="."
[ -n "$_ds_extras" ] && _ds_spec=".[${_ds_extras}]"

_ds_check_modules="apache_beam, tensorflow, PIL, numpy, google.cloud.storage"
[ "$_ds_extras" = "test" ] && _ds_check_modules="$_ds_check_modules, pytest, xdist, gcp_storage_emulator, skimage, importlinter, distributed, rasterio, pyproj, shapely"
[ "$_ds_extras" = "geo" ] && _ds_check_modules="$_ds_check_modules, rasterio, pyproj, shapely"

export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export NO_GCE_CHECK="${NO_GCE_CHECK:-true}"

if [ -n "${VIRTUAL_ENV:-}" ] && [ "$VIRTUAL_ENV" != "$_ds_root/.venv" ] \
   && python -c "import $_ds_check_modules, pipeline" >/dev/null 2>&1; then
  PYTHON="$(command -v python)"
else
  _ds_host_python="${DECONVSEG_PYTHON:-$(command -v python3 || command -v python)}"
  if [ -z "$_ds_host_python" ]; then
    echo "deconvseg: no python3 found; install Python 3.10 or newer." >&2
    return 1 2>/dev/null || exit 1
  fi
  if ! "$_ds_host_python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "deconvseg: $("$_ds_host_python" --version 2>&1) is too old; Python 3.10+ is required (set DECONVSEG_PYTHON)." >&2
    return 1 2>/dev/null || exit 1
  fi
  _ds_venv="$_ds_root/.venv"
  _ds_stamp="$_ds_venv/.deconvseg-installed"
  _ds_hash="$(cat "$_ds_root/requirements.lock" "$_ds_root/setup.py" | sha256sum | cut -c1-16)"
  # The stamp records the lock hash and the extras installed with it ("<hash> test").
  _ds_have="$(cat "$_ds_stamp" 2>/dev/null || true)"
  _ds_ok=1
  [ -x "$_ds_venv/bin/python" ] || _ds_ok=0
  [ "${_ds_have%% *}" = "$_ds_hash" ] || _ds_ok=0
  _ds_have_extras=""
  case "$_ds_have" in *" "*) _ds_have_extras="${_ds_have#* }" ;; esac
  if [ -n "$_ds_extras" ] && [ "$_ds_have_extras" != "$_ds_extras" ] \
     && ! { [ "$_ds_extras" = "geo" ] && [ "$_ds_have_extras" = "test" ]; }; then _ds_ok=0; fi
  if [ "$_ds_ok" = 0 ]; then
    echo "deconvseg: setting up $_ds_venv from requirements.lock (first run takes about a minute)..." >&2
    [ -x "$_ds_venv/bin/python" ] || "$_ds_host_python" -m venv "$_ds_venv" || { return 1 2>/dev/null || exit 1; }
    "$_ds_venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1
    if ! (cd "$_ds_root" && "$_ds_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
          -c requirements.lock -e "$_ds_spec" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)); then
      echo "deconvseg: dependency installation failed (see above)." >&2
      return 1 2>/dev/null || exit 1
    fi
    # The real labelled nuclei image of docs/OWN_DATA.md ships inside stardist's wheel; only
    # that data file is used, so the package goes in without its (heavy) dependencies.
    if [ "$_ds_extras" = "test" ] && ! "$_ds_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
          --no-deps "$(grep -i '^stardist==' "$_ds_root/requirements.lock")" \
          2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); then
      echo "deconvseg: installing the stardist data package failed (see above)." >&2
      return 1 2>/dev/null || exit 1
    fi
    echo "$_ds_hash${_ds_extras:+ $_ds_extras}" > "$_ds_stamp"
  fi
  PYTHON="$_ds_venv/bin/python"
fi
export PYTHON
unset _ds_root _ds_extras _ds_spec _ds_check_modules _ds_host_python _ds_venv _ds_stamp _ds_hash _ds_have _ds_have_extras _ds_ok
