#!/usr/bin/env bash
# Set up (idempotent) and run the main job on coco128 with the embedded database.
set -euo pipefail
cd "$(dirname "$0")/.."
LABEL_GRADER_SKIP_BROWSER=1 bash scripts/setup.sh
export FIFTYONE_DO_NOT_TRACK=true FIFTYONE_DATABASE_VALIDATION=false FIFTYONE_SHOW_PROGRESS_BARS=false
exec .venv/bin/label-grader demo "$@"
