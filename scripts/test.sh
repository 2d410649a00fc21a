#!/usr/bin/env bash
# Run every test: library tests (pytest) and every notebook in the smoke profile (nbval).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PSGD_PROFILE=smoke
python3 -m pytest -q -p no:cacheprovider tests --nbval-lax notebooks "$@"
