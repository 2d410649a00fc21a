#!/usr/bin/env bash
# Check that a built book renders its math with no network.
#
#   bash scripts/check_offline_math.sh [SITE] [OUT] [PAGE ...]
#
# SITE: the built HTML (default _build/html); OUT: where the screenshots and DOM dumps go
# (default _build/offline_check); PAGE: pages to check, relative to SITE (default
# book/notation.html notebooks/01_criterion.html).
# Serves SITE on 127.0.0.1, opens each page in headless Chromium with every other host
# unresolvable (so nothing can come from a CDN), lets MathJax run, then checks the rendered DOM:
# MathJax's <mjx-container> elements exist, no math element is left as raw TeX, and MathJax
# reported no error (<mjx-merror>, e.g. an undefined macro). It also fails if a page still
# loads MathJax from a remote URL, and saves a screenshot of each page.
# Exit 0: all pages pass; 1: a check failed; 77: no Chromium (the test suite then skips).
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${1:-_build/html}
OUT=${2:-_build/offline_check}
shift $(( $# > 2 ? 2 : $# ))
PAGES=("$@")
[ ${#PAGES[@]} -gt 0 ] || PAGES=(book/notation.html notebooks/01_criterion.html)
PY=${PYTHON:-python3}

CHROME=""
for c in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$c" >/dev/null; then CHROME=$(command -v "$c"); break; fi
done
[ -n "$CHROME" ] || { echo "check_offline_math: no chromium found (apt-get install -y chromium)" >&2; exit 77; }
[ -d "$SITE" ] || { echo "check_offline_math: no built site at $SITE" >&2; exit 1; }
mkdir -p "$OUT"

PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$PY -m http.server "$PORT" --bind 127.0.0.1 --directory "$SITE" >"$OUT/http.log" 2>&1 &
SERVER=$!
PROFILE_DIR=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$PROFILE_DIR"' EXIT
for _ in $(seq 50); do
  $PY -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/')" 2>/dev/null && break
  sleep 0.1
done

chrome() {  # chrome ARGS... : a fresh profile each time, no network but 127.0.0.1
  local dir; dir=$(mktemp -d -p "$PROFILE_DIR")
  timeout 120 "$CHROME" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --disable-dev-shm-usage \
    --user-data-dir="$dir" --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" \
    --virtual-time-budget=20000 "$@" 2>>"$OUT/chromium.log"
}

status=0
for page in "${PAGES[@]}"; do
  [ -f "$SITE/$page" ] || { echo "FAIL $page: not in $SITE"; status=1; continue; }
  name=$(echo "$page" | tr '/' '_' | sed 's/\.html$//')
  url="http://127.0.0.1:$PORT/$page"
  chrome --dump-dom "$url" >"$OUT/$name.dom.html" || true
  chrome --window-size=1280,1600 --screenshot="$OUT/$name.png" "$url" >/dev/null || true
  $PY - "$SITE/$page" "$OUT/$name.dom.html" "$OUT/$name.png" "$page" <<'PYEOF' || status=1
import re, sys
from html.parser import HTMLParser
from pathlib import Path

source, dom, png, page = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
html = source.read_text(encoding="utf-8")
remote = re.findall(r'<script[^>]+src="(https?://[^"]*mathjax[^"]*)"', html, re.I)


class Math(HTMLParser):
    """Counts math elements (class "math" from Sphinx) and whether each got an mjx-container."""
    def __init__(self):
        super().__init__()
        self.stack, self.math, self.raw, self.containers, self.errors = [], 0, 0, 0, 0

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "img", "meta", "link", "input", "hr", "col", "source", "wbr", "area", "base"):
            return
        cls = dict(attrs).get("class") or ""
        is_math = tag in ("span", "div") and "math" in cls.split()
        if is_math:
            self.math += 1
        if tag == "mjx-container":
            self.containers += 1
            for frame in self.stack:
                if frame[0]:
                    frame[1] = True
        if tag == "mjx-merror":
            self.errors += 1
        self.stack.append([is_math, False, tag])

    def handle_endtag(self, tag):
        while self.stack:
            is_math, rendered, t = self.stack.pop()
            if is_math and not rendered:
                self.raw += 1
            if t == tag:
                break


p = Math()
text = dom.read_text(encoding="utf-8", errors="replace") if dom.exists() else ""
p.feed(text)
problems = []
if remote:
    problems.append(f"loads MathJax from the network: {remote}")
if p.containers == 0:
    problems.append("no <mjx-container>: MathJax did not typeset the page")
if p.raw:
    problems.append(f"{p.raw} of {p.math} math elements left as raw TeX")
if p.errors:
    problems.append(f"{p.errors} MathJax errors (<mjx-merror>)")
if not png.exists() or png.stat().st_size == 0:
    problems.append("no screenshot")
verdict = "FAIL" if problems else "ok"
print(f"{verdict} {page}: {p.containers} mjx-container elements, {p.math} math elements, "
      f"{p.raw} raw, {p.errors} errors; screenshot {png}" + ("".join(f"\n  - {q}" for q in problems)))
sys.exit(1 if problems else 0)
PYEOF
done
exit $status
