#!/usr/bin/env bash
# Screenshots a run report in headless Chromium (the docs picture, and the
# report's browser test). Usage: scripts/screenshot_report.sh REPORT.html OUT.png [WIDTH,HEIGHT]
# Offline-safe: no background networking, no component updates, a throwaway profile.
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]" >&2
  exit 2
fi
report="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
png="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
size="${3:-1280,2000}"
chromium="${CHROMIUM:-$(command -v chromium || true)}"
if [ -z "$chromium" ]; then
  echo "screenshot_report: chromium not found; run scripts/install_chromium.sh (as root)." >&2
  exit 1
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars \
  --user-data-dir="$profile" --window-size="$size" --screenshot="$png" "file://$report" 2>"$profile/stderr" \
  || { cat "$profile/stderr" >&2; exit 1; }
[ -s "$png" ] || { echo "screenshot_report: chromium wrote no screenshot" >&2; cat "$profile/stderr" >&2; exit 1; }
echo "$png"
