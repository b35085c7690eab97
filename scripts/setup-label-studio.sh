#!/usr/bin/env bash
# Label Studio in a virtual environment of its own (it pins numpy < 2.3 and its own Django stack, ~1 GB), built
# once per machine under the user's cache; scripts/test.sh runs this for the Label Studio round-trip tests.
# Prints the path of its `label-studio` command.
set -euo pipefail
VERSION=1.23.2
CACHE=${DENSEDPO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/densedpo}
VENV="$CACHE/label-studio-$VERSION"
if [ ! -f "$VENV/.densedpo-ready" ]; then
  echo "densedpo setup: installing Label Studio $VERSION into $VENV (first time only, about 3 minutes)" >&2
  mkdir -p "$CACHE"
  rm -rf "$VENV"  # a half-built one (no marker) is started over
  ${PYTHON:-python3} -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "label-studio==$VERSION" 2>&1 \
    | { grep -v "^WARNING: Location" >&2 || true; }
  "$VENV/bin/label-studio" --help >/dev/null  # installed and runnable, else stop here (no marker)
  touch "$VENV/.densedpo-ready"
fi
echo "$VENV/bin/label-studio"
