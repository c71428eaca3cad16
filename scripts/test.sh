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

# The Celery deployment tests (dunning.cluster) use Redis as broker, started on 127.0.0.1 by the
# tests themselves (no service, no persistence).
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Redis (Debian package) for the Celery deployment tests ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >/dev/null \
      || { apt-get update -q >/dev/null \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >/dev/null; }
  fi
fi

export PYTHONPATH="$PWD/plugins:$PWD"
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .

# The deployment tests (marker "cluster": a real scheduler, workers and UI on loopback) spend
# most of their time waiting on those processes, so a full run starts them beside the rest of
# the suite, each pytest with its own servers; their output follows the main run's.  Half of
# the clock guard (tests/test_clock_guard.py: the date- and hour-sensitive tests again at four
# moved instants; marker "clock_guard") runs in that second pytest too, to even the two out.
# With arguments (a file, -k, ...) it is one plain pytest run.
no_tests() { echo "pytest collected no tests ($1): that is a failure, not a pass" >&2; }
set +e
if [ "$#" -gt 0 ]; then
  .venv/bin/python -m pytest "$@"
  rc=$?
  [ "$rc" = 5 ] && { no_tests "$*"; rc=1; }
  exit "$rc"
fi
mkdir -p var
.venv/bin/python -m pytest -m "cluster or clock_guard" > var/cluster-tests.log 2>&1 &
cluster_pid=$!
.venv/bin/python -m pytest -m "not cluster and not clock_guard"
rc=$?
wait "$cluster_pid"
cluster_rc=$?
echo "---- deployment tests and clock guard (-m 'cluster or clock_guard', run alongside; log: var/cluster-tests.log) ----"
cat var/cluster-tests.log
[ "$rc" = 5 ] && { no_tests "-m 'not cluster and not clock_guard'"; rc=1; }
[ "$cluster_rc" = 5 ] && { no_tests "-m 'cluster or clock_guard'"; cluster_rc=1; }
[ "$rc" != 0 ] && exit "$rc"
exit "$cluster_rc"
