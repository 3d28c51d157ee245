#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite against a fresh embedded database.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FIFTYONE_DATABASE_DIR="$(mktemp -d -t lg-db-XXXX)"
trap 'rm -rf "$FIFTYONE_DATABASE_DIR"' EXIT   # a few hundred MB per run otherwise
export FIFTYONE_DO_NOT_TRACK=true FIFTYONE_DATABASE_VALIDATION=false
.venv/bin/python -m pytest -q "$@"
