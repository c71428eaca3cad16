#!/usr/bin/env bash
# The Airflow UI (API server, scheduler, DAG processor, triggerer; 127.0.0.1 only) with the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONPATH="$PWD/plugins:$PWD"
exec .venv/bin/python -m dunning ui "$@"
