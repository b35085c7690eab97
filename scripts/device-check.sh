#!/usr/bin/env bash
# One device check: every stage at real size from stand-ins, one JSON (benchmarks/device_check.py says what).
#   bash scripts/device-check.sh            on a GPU: Wan 2.1 1.3B at 81x480x832, Qwen2.5-VL-7B (within 8 minutes)
#   bash scripts/device-check.sh --small    on a CPU: the same code paths at tiny sizes (the test suite runs it)
# Python: $PYTHON, else .venv/bin/python (scripts/setup.sh on a CPU; on a GPU host an environment with `pip install
# vllm` and `pip install -e '.[all]'`, as setup.sh's header says).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mode=full
[ "${1:-}" = "--small" ] && mode=small
exec "$PY" benchmarks/device_check.py "$@" --out "benchmarks/results/device_check_${mode}.json"
