#!/usr/bin/env bash
# Run the tests: library tests (pytest) and every notebook in the smoke profile (nbval).
# The slow integration tests (real Table I runs, ~10 min) run separately: scripts/test_slow.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PSGD_PROFILE=smoke
python3 -m pytest -q -p no:cacheprovider -m "not slow" tests --nbval-lax notebooks "$@"
