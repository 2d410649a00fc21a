#!/usr/bin/env bash
# The slow integration tests (marked `slow`): real PSGD runs at the paper's settings that must
# solve and reproduce stored Table I runs. About 10 minutes on 2 CPU cores; CI runs them too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PSGD_PROFILE=smoke
python3 -m pytest -q -p no:cacheprovider -m slow tests "$@"
