#!/usr/bin/env bash
# Second command of the README: set up .venv on first use, lint and format-check, then run the whole test suite.
#   bash scripts/test.sh           everything (real vLLM, Chromium, schemathesis, training runs): what CI runs
#   bash scripts/test.sh --fast    the edit-test loop: no vLLM, no browser, no training run, 2 workers (~70 s)
# Further arguments go to pytest (e.g. -k journal, -x, -q).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ "${1:-}" = "--fast" ]; then
  shift
  # two workers: these tests share no server, and the two cores are both busy
  exec .venv/bin/python -m pytest -n 2 -m "not vllm and not slow and not browser" "$@"
fi
exec .venv/bin/python -m pytest "$@"
