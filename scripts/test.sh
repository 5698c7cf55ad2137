#!/usr/bin/env bash
# Set up ./.venv (see scripts/setup.sh), type-check the package (mypy) and run the test suite.
# Extra arguments go to pytest (e.g. `-m misuse`, `-k serve`, `-x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"  # one line per test file, with a running count
