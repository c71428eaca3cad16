"""What both deployment-test modules give their Airflow: a migrated PostgreSQL ledger, a fresh
bucket and the environment pointing the DAGs at them and at the session's servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dunning import ledger, services


@contextmanager
def deployment_inputs(
    prefix: str, config: Path, now: str, postgres: Any, s3: Any, smtp: Any, sms: Any
) -> Iterator[dict]:
    """Yields ``env`` (the DAGs' settings, for ``running_cluster``), ``ledger_url``, ``client``
    and ``bucket``; removes the ledger database and the bucket afterwards."""
    ledger_db = f"ledger_{uuid.uuid4().hex[:12]}"
    ledger_url = services.create_database(postgres, ledger_db)
    ledger.migrate(ledger_url)  # before the workers: not several tasks racing to create tables
    bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
    client = services.s3_client(s3.url)
    client.create_bucket(Bucket=bucket)
    env = {
        **services.airflow_connection_env(s3, smtp, sms=sms),
        "DUNNING_CONFIG": str(config),
        "DUNNING_LAKE": f"s3://dunning_s3@{bucket}/",
        "DUNNING_LEDGER_URL": ledger_url,
        # Inside every debtor's contact hours: a wave would be due, so "nothing sent" means
        # something.
        "DUNNING_NOW": now,
        # Only the runs the tests start: no scheduled run of the latest slot interleaves.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }
    try:
        yield {"env": env, "ledger_url": ledger_url, "client": client, "bucket": bucket}
    finally:
        services.drop_database(postgres, ledger_db)
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for page in pages:
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)
