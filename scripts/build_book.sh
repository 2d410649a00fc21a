#!/usr/bin/env bash
# Build the Jupyter Book (executing every notebook in the profile PSGD_PROFILE, default "cpu")
# from a clean execution cache (the cache does not see library changes). Output: _build/html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PSGD_PROFILE=${PSGD_PROFILE:-cpu}
jupyter-book clean --all .
jupyter-book build -W -n --keep-going .
