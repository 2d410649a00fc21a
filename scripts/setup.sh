#!/usr/bin/env bash
# Install everything the tests and the book build need (Python 3.11, fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check -r requirements.txt
$PY -m pip install -q --disable-pip-version-check --no-deps -e .
