#!/usr/bin/env bash
# The whole test suite: lint, then pytest (unit, DAG integrity, end to end with real servers,
# SQLite and PostgreSQL).  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# PostgreSQL is part of the suite; install Debian's server if this machine lacks it.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL (Debian package) for the ledger tests ..."
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
  fi
fi

export PYTHONPATH="$PWD/plugins:$PWD"
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
