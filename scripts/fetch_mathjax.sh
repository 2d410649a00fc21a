#!/usr/bin/env bash
# Place a local copy of MathJax where the book's _config.yml expects it, so that the built site
# renders its formulas with no network (sphinx: config: mathjax_path: mathjax/tex-mml-chtml.js,
# html_static_path: _build/_offline_static).
#
#   bash scripts/fetch_mathjax.sh [DEST]     # default DEST: _build/_offline_static/mathjax
#
# Source, first found: $MATHJAX_DIR (a folder holding tex-mml-chtml.js, e.g. an unpacked
# mathjax package's es5/), the cache ($PSGD_CACHE or ~/.cache/psgdlib)/mathjax-VERSION, else the
# npm registry: `npm pack mathjax@VERSION` (npm checks the tarball's integrity), unpacked into
# the cache. Only the CommonHTML output is copied (no SVG output, no *-full bundles).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.2.2          # the MathJax 3 that Sphinx 7's default CDN URL (mathjax@3) serves
DEST=${1:-_build/_offline_static/mathjax}
CACHE="${PSGD_CACHE:-$HOME/.cache/psgdlib}/mathjax-$VERSION"

if [ -n "${MATHJAX_DIR:-}" ]; then
  SRC=$MATHJAX_DIR
elif [ -f "$CACHE/es5/tex-mml-chtml.js" ]; then
  SRC=$CACHE/es5
else
  command -v npm >/dev/null || { echo "fetch_mathjax: npm not found (or set MATHJAX_DIR)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "mathjax@$VERSION" >/dev/null)
  mkdir -p "$tmp/unpacked"
  tar -xzf "$tmp/mathjax-$VERSION.tgz" -C "$tmp/unpacked"
  test -f "$tmp/unpacked/package/es5/tex-mml-chtml.js"
  mkdir -p "$(dirname "$CACHE")"
  rm -rf "$CACHE.partial" && mv "$tmp/unpacked/package" "$CACHE.partial" && rm -rf "$CACHE" && mv "$CACHE.partial" "$CACHE"
  SRC=$CACHE/es5
fi
test -f "$SRC/tex-mml-chtml.js" || { echo "fetch_mathjax: no tex-mml-chtml.js in $SRC" >&2; exit 1; }
rm -rf "$DEST"
mkdir -p "$DEST"
# everything tex-mml-chtml.js may load (input extensions, CommonHTML fonts, menu, a11y, sre)
(cd "$SRC" && find . -type f ! -name '*svg*' ! -name '*-full*' ! -name 'node-main.js' ! -path './output/svg/*' -print0 \
  | tar --null -cf - -T -) | tar -xf - -C "$DEST"
[ -f "$SRC/../LICENSE" ] && cp "$SRC/../LICENSE" "$DEST/LICENSE"
echo "MathJax $VERSION -> $DEST ($(du -sh "$DEST" | cut -f1))"
