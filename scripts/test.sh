#!/usr/bin/env bash
# Set up ./.venv (see scripts/setup.sh), type-check the package (mypy), build the documentation site
# strictly (a broken link or anchor, a missing page, or an API page out of step with the code fails
# the run) and run the test suite (about 10-15 minutes on 2 cores).
# Extra arguments go to pytest (e.g. `-m misuse`, `-k serve`, `-x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m mypy
# The site goes to a fresh temporary folder, removed afterwards: ./site (the default of
# `mkdocs build`) is left alone. Offline: no web fonts, no plugin that downloads.
site=$(mktemp -d "${TMPDIR:-/tmp}/lrnet-site.XXXXXX")
trap 'rm -rf "$site"' EXIT
echo "mkdocs build --strict: the documentation site"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -d "$site"  # not --quiet: it would hide the warnings that fail it
rm -rf "$site"
trap - EXIT
exec .venv/bin/python -m pytest "$@"  # one line per test file, with a running count
