#!/usr/bin/env bash
# Install everything Dunning needs into .venv from the locked requirements.txt (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "Dunning needs Python 3.11 (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(sed -n 's/^uv==//p' requirements.txt)"
fi
# sync: exactly the lock, nothing more (removes what is not in it, so stale packages can't hide).
.venv/bin/uv pip sync --quiet --python .venv/bin/python requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import airflow, dunning" 2>/dev/null || PYTHONPATH=plugins .venv/bin/python -c "import airflow, dunning"
