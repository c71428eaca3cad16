#!/usr/bin/env bash
# The main job: dunning_daily end to end on a generated portfolio, with local S3 and SMTP.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONPATH="$PWD/plugins:$PWD"
exec .venv/bin/python -m dunning demo "$@"
