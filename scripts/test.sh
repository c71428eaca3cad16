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

# The payment-page tests drive headless Chromium (Playwright with the system browser); install
# Debian's if missing.  The package lists are usually fresh enough; update them only on failure.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Chromium (Debian package) for the payment-page tests ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null \
      || { apt-get update -q >/dev/null \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null; } \
      || echo "could not install Chromium: the payment-page tests skip (fail when CI is set)" >&2
  fi
fi

# Placement files are PGP-encrypted with GnuPG (python-gnupg drives the gpg binary).
if ! command -v gpg >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing GnuPG (Debian package) for the placement encryption tests ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gnupg >/dev/null \
      || { apt-get update -q >/dev/null \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gnupg >/dev/null; }
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
