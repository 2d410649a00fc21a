#!/usr/bin/env bash
# Build the Jupyter Book (executing every notebook in the profile PSGD_PROFILE, default "cpu")
# from a clean execution cache (the cache does not see library changes). Output: _build/html.
# MathJax is served from the site itself (scripts/fetch_mathjax.sh), so it reads offline;
# scripts/check_offline_math.sh checks that in a headless browser.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PSGD_PROFILE=${PSGD_PROFILE:-cpu}
jupyter-book clean --all .
bash scripts/fetch_mathjax.sh _build/_offline_static/mathjax
jupyter-book build -W -n --keep-going .
