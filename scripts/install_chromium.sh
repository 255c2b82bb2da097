#!/usr/bin/env bash
# Makes sure Debian's headless-capable Chromium is installed, for the report's
# real-browser test. Idempotent: does nothing when `chromium` is on PATH.
# Needs root (apt-get); prints why and exits non-zero otherwise, so the test
# fails loudly instead of skipping.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "${EUID:-$(id -u)}" != 0 ]; then
  echo "install_chromium: chromium is missing and installing it needs root (apt-get install chromium)." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null 2>&1
