#!/usr/bin/env bash
# Renders a `fineline analyze` report in headless Chromium and saves a full-page PNG:
#   tools/screenshot_report.sh REPORT_DIR OUT.png [WIDTH] [HEIGHT]
# Needs Debian's `chromium` (apt-get install chromium) or $CHROMIUM. The page is one
# self-contained file, so no server is involved; the browser runs with a fresh profile and
# no network features, and the profile is removed afterwards.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 REPORT_DIR OUT.png [WIDTH] [HEIGHT]" >&2
  exit 2
fi
report="$1/index.html"
out="$2"
width="${3:-1280}"
height="${4:-4000}"
if [ ! -f "$report" ]; then
  echo "$0: $report not found (make it with: fineline analyze --results ... --output $1)" >&2
  exit 1
fi
browser="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$browser" ]; then
  echo "$0: chromium not found; install it with: apt-get install -y chromium" >&2
  exit 1
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
tmp_png="$out_abs.tmp-$$.png"  # written beside OUT, moved into place only when complete
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --no-first-run --disable-sync --hide-scrollbars \
  --user-data-dir="$profile" --window-size="$width,$height" --virtual-time-budget=5000 \
  --screenshot="$tmp_png" "file://$(cd "$1" && pwd)/index.html" >/dev/null 2>&1 || {
  rm -f "$tmp_png"
  echo "$0: chromium failed to render $report" >&2
  exit 1
}
if [ ! -s "$tmp_png" ]; then
  rm -f "$tmp_png"
  echo "$0: chromium wrote no screenshot of $report" >&2
  exit 1
fi
mv "$tmp_png" "$out_abs"
echo "$out_abs"
