#!/usr/bin/env bash
# Second command of the README: set up .venv on first use, lint and format-check, then run the whole test suite.
#   bash scripts/test.sh           everything (real vLLM, Chromium, schemathesis, Label Studio, training runs): CI
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
# Label Studio for the round-trip tests: its own environment, built once per machine (tests find it by this variable)
DENSEDPO_LABEL_STUDIO=$(bash scripts/setup-label-studio.sh) || DENSEDPO_LABEL_STUDIO=""
export DENSEDPO_LABEL_STUDIO
exec .venv/bin/python -m pytest "$@"
