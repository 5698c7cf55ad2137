#!/usr/bin/env bash
# Set up ./.venv (see scripts/setup.sh) and run the main job on built-in synthetic data:
# generate a small landmark dataset, train g1 and g2 briefly, evaluate, print the metrics.
# Extra arguments go to `lrnet demo` (e.g. --epochs 80 --output /tmp/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/lrnet demo "$@"
