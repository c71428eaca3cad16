#!/usr/bin/env bash
# The Airflow UI (airflow standalone, 127.0.0.1 only) with dunning_daily, local S3 and SMTP.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONPATH="$PWD/plugins:$PWD"
exec .venv/bin/python -m dunning ui "$@"
