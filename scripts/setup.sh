#!/usr/bin/env bash
# Create ./.venv and install lrnet into it (editable, with the video, serve, cluster and dev extras). Idempotent:
# a re-run with an unchanged pyproject.toml does nothing.
#
# PyTorch is installed first, on its own, so that pip does not pick a multi-GB CUDA build when a
# CPU build is wanted. Choose the build with LRNET_TORCH (default "torch==2.13.0"), e.g.
#   LRNET_TORCH="torch --index-url https://download.pytorch.org/whl/cpu" bash scripts/setup.sh
# A torch already importable in the venv is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.lrnet-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import lrnet, torch" 2>/dev/null; then
  exit 0
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  .venv/bin/pip install --disable-pip-version-check -q ${LRNET_TORCH:-torch==2.13.0}
fi
.venv/bin/pip install --disable-pip-version-check -q -e ".[video,serve,cluster,dev]"
echo "$want" > "$stamp"
