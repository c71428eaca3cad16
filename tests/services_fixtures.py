"""Pytest plugin: the real local servers (SeaweedFS S3, SMTP sink, SMS sink, PostgreSQL), one of each per session.

Loaded by the main conftest (``pytest_plugins = ["tests.services_fixtures"]``).  Servers start
only when a test asks for them, once per session, and are stopped by pid at the session's end,
so a test run never leaves a process or a listening port behind.  Per-test isolation is by
bucket (``s3_bucket``) and by database (``pg_url``), not by server, which keeps the cost of a
server start (about 3 s for SeaweedFS) out of each test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dunning import ledger, services
from dunning.services import Service


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def s3_server(services_dir: Path) -> Iterator[Service]:
    service = services.start_s3(services_dir / "s3")
    try:
        yield service
    finally:
        services.stop(service)


@pytest.fixture(scope="session")
def smtp_server(services_dir: Path) -> Iterator[Service]:
    service = services.start_smtp(services_dir / "smtp")
    try:
        yield service
    finally:
        services.stop(service)


@pytest.fixture(scope="session")
def sms_server(services_dir: Path) -> Iterator[Service]:
    """The Twilio-style SMS sink; ``extra``: dir, account, token, sender."""
    service = services.start_sms(services_dir / "sms")
    try:
        yield service
    finally:
        services.stop(service)


@pytest.fixture(scope="session")
def postgres_server(services_dir: Path) -> Iterator[Service]:
    """Skipped on a laptop without PostgreSQL, but a failure under CI: CI must not skip it silently."""
    if services.postgres_bindir() is None:
        message = "PostgreSQL is not installed (apt-get install -y postgresql)"
        if _in_ci():
            pytest.fail(f"{message}; CI must run the PostgreSQL tests", pytrace=False)
        pytest.skip(message)
    service = services.start_postgres(services_dir / "postgres")
    try:
        yield service
    finally:
        services.stop(service)


@pytest.fixture
def s3_client(s3_server: Service) -> Any:
    return services.s3_client(s3_server.url)


@pytest.fixture
def s3_bucket(s3_server: Service, s3_client: Any) -> Iterator[str]:
    """A new, empty bucket per test; deleted afterwards with whatever the test put in it."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3_client.delete_object(Bucket=name, Key=obj["Key"])
    s3_client.delete_bucket(Bucket=name)


@pytest.fixture
def pg_url(postgres_server: Service) -> Iterator[str]:
    """A new database per test on the session's server; its SQLAlchemy URL."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = services.create_database(postgres_server, name)
    yield url
    services.drop_database(postgres_server, name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty ledger database, once on SQLite and once on PostgreSQL (not migrated)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def ledger_engine(ledger_url: str) -> Iterator[sa.Engine]:
    """A migrated ledger on each backend."""
    ledger.migrate(ledger_url)
    with ledger.ledger(ledger_url) as engine:
        yield engine
