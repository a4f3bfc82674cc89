#!/usr/bin/env bash
# Render RUN/report.html to a PNG with headless chromium, to check a report by eye.
#   scripts/screenshot_report.sh RUN OUT.png [WIDTH,HEIGHT]
# Needs Debian's chromium (apt-get install -y chromium); nothing is fetched from the network.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 RUN OUT.png [WIDTH,HEIGHT]" >&2
    exit 2
fi
html="$(realpath "$1")/report.html"
out="$(realpath -m "$2")"
size="${3:-1280,2400}"
[[ -f "$html" ]] || { echo "$html: not found; run hmtc report $1 first" >&2; exit 2; }
browser="$(command -v chromium || command -v chromium-browser || true)"
[[ -n "$browser" ]] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 2; }

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# A throwaway profile and every background service off: the page must render offline.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --screenshot="$out" --window-size="$size" \
    "file://$html" >/dev/null 2>&1
[[ -s "$out" ]] || { echo "chromium wrote no screenshot" >&2; exit 1; }
echo "wrote $out"
