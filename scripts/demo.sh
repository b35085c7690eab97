#!/usr/bin/env bash
# First command of the README: set up .venv on first use, then run the demo end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/densedpo demo "$@"
