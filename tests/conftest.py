"""Test session set-up: an isolated Airflow home and metadata DB, and the real local servers.

Airflow reads its configuration from the environment when first imported, so the variables are
set here, at import time of the conftest, before any test module imports Airflow.
"""

from __future__ import annotations

import os
import tempfile
from datetime import date, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="dunning-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        # No config yet: the DAG must still parse (defaults), as in a fresh deployment.
        "DUNNING_CONFIG": str(_AIRFLOW_HOME / "no-config-yet.yaml"),
        "DUNNING_LEDGER_URL": f"sqlite:///{_AIRFLOW_HOME / 'ledger.sqlite'}",
        "DUNNING_LAKE": (_AIRFLOW_HOME / "lake").as_uri(),
    }
)

pytest_plugins = ["tests.services_fixtures"]


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata DB, made once per session (about 10 s)."""
    from airflow.utils.db import initdb

    initdb()
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The Airflow home is made at import time, outside tmp_path: remove it ourselves."""
    import shutil

    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture
def pin_clock(monkeypatch):
    """Pin the product clock (``dunning.clock``) for this test; call again to move it on (a later
    wave of the same day).  Business dates are pinned separately: ``tests.pinned.TODAY``."""
    from dunning import clock

    def pin(at: str | datetime) -> None:
        instant = datetime.fromisoformat(at) if isinstance(at, str) else at
        monkeypatch.setenv(clock.PIN, instant.isoformat())

    return pin


@pytest.fixture
def daily_env(airflow_db, s3_server, smtp_server, sms_server, s3_bucket, tmp_path, monkeypatch):
    """Point the DAG at a fresh bucket, ledger and (per test) portfolio, with the local SMTP and
    SMS servers as its providers and the clock pinned inside every debtor's hours."""
    from dunning import services
    from dunning.demo import demo_clock, use_sms_feedback
    from dunning.generate import generate

    env = services.airflow_connection_env(s3_server, smtp_server, sms=sms_server)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DUNNING_LAKE", f"s3://dunning_s3@{s3_bucket}/")
    monkeypatch.setenv("DUNNING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")

    def use(as_of: date, debtors: int = 150) -> dict:
        counts = generate(tmp_path / "portfolio", debtors=debtors, as_of=as_of, seed=11)
        config = tmp_path / "portfolio" / "config.yaml"
        use_sms_feedback(config, Path(sms_server.extra["dir"]))
        monkeypatch.setenv("DUNNING_CONFIG", str(config))
        monkeypatch.setenv("DUNNING_NOW", demo_clock(as_of))
        return counts

    return use


@pytest.fixture
def agency_gpg(tmp_path):
    """An agency's key pair: (public key file, GnuPG home with the private key); the gpg-agent
    that decrypting starts is stopped afterwards."""
    from dunning.bench import agency_key, stop_gpg_agent

    home = tmp_path / "agency-gpg"
    yield agency_key(home), home
    stop_gpg_agent(home)
