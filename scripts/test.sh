#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite against a fresh embedded database.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FIFTYONE_DATABASE_DIR="$(mktemp -d -t lg-db-XXXX)"
export FIFTYONE_DO_NOT_TRACK=true FIFTYONE_DATABASE_VALIDATION=false
exec .venv/bin/python -m pytest -q "$@"
