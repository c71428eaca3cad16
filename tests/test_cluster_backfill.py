"""Finance's backfill on a real deployment: ``airflow backfill create`` over two calendar weeks.

A real scheduler on a PostgreSQL metadata DB creates and runs the backfill's runs (see
``dunning.cluster``); the lake is on the session's SeaweedFS, the ledger on PostgreSQL, and the
SMTP server and SMS provider are the real local ones.  Every business date gets its own dated
drop (``drops/<date>/``), as a data engineer would keep them for replays, and the config's file
sources read ``{as_of}`` from the path.  What finance must see: ten runs, all green, snapshots,
decisions and a report for each date marked as a backfill -- and nobody contacted.

The command is the README's: one run at a time (``--max-active-runs 1``).  The days share the
ledger -- the history tables are replaced by each run, payments are reconciled against the lines
earlier days already booked, the jump gates compare with the previous day's snapshot -- so
concurrent runs deadlock or collide on keys, and their results would depend on which day
finished first.  The runs take about 30 s each on two cores: this is the suite's slowest test.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from dunning import ledger, reports, sms_sink
from dunning.cluster import Cluster, running_cluster
from dunning.demo import demo_clock, use_sms_feedback
from dunning.generate import generate
from dunning.reports import daily
from tests.cluster_support import deployment_inputs
from tests.pinned import TODAY

pytestmark = [
    pytest.mark.services,
    pytest.mark.airflow,
    pytest.mark.cluster,
    pytest.mark.timeout(1800),
]

DAG_ID = "dunning_daily"
ZONE = ZoneInfo("America/New_York")  # the generated portfolio's schedule zone
CRON = "0 6 * * 1-5"  # business days only: the backfill creates no weekend runs
DEBTORS = 150  # small and fast; the generator needs about this many for every feed to have rows
JUMP_GATES = ["ROW_CHANGE", "BALANCE_CHANGE"]


def two_weeks_before_this_one() -> tuple[date, date, list[date]]:
    """Monday and Sunday of the two calendar weeks before the pinned one, and their weekdays."""
    monday = TODAY - timedelta(days=TODAY.weekday() + 14)
    sunday = monday + timedelta(days=13)
    days = [monday + timedelta(days=i) for i in range(14)]
    return monday, sunday, [d for d in days if d.weekday() < 5]


def dated_drops(root: Path, days: list[date], sms_dir: Path) -> Path:
    """One generated portfolio per business date, and a config whose file sources read the
    drop of the run's date.  The config sits in the first day's folder, so the standing inputs
    (history, payment feeds, rates, promises) are those of the first date: none of them is
    from after any date being recomputed.  The generated SQL source is dropped: its URL has no
    ``{as_of}``, and a backfill of it would stop with SOURCE_AHEAD (that is the gate working)."""
    for day in days:
        generate(root / day.isoformat(), debtors=DEBTORS, as_of=day, seed=11)
    config = root / days[0].isoformat() / "config.yaml"
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    doc["schedule"] = {"cron": CRON, "timezone": str(ZONE)}
    sources = []
    for src in doc["sources"]:
        if src["kind"] == "sql":
            continue
        src["path"] = f"../{{as_of}}/{Path(src['path']).name}"
        sources.append(src)
    doc["sources"] = sources
    config.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    use_sms_feedback(config, sms_dir)
    return config


@pytest.fixture(scope="module")
def backfill_setup(
    tmp_path_factory, postgres_server, s3_server, smtp_server, sms_server
) -> Iterator[dict[str, Any]]:
    """Drops, an empty migrated PostgreSQL ledger and a fresh bucket: the deployment's inputs
    (the ledger database and the bucket are removed afterwards)."""
    root = tmp_path_factory.mktemp("backfill")
    first, last, days = two_weeks_before_this_one()
    config = dated_drops(root / "drops", days, Path(sms_server.extra["dir"]))
    now = demo_clock(TODAY)  # a weekday afternoon had they not been backfills
    with deployment_inputs(
        "backfill", config, now, postgres_server, s3_server, smtp_server, sms_server
    ) as inputs:
        yield {**inputs, "root": root, "days": days, "window": (first, last)}


@pytest.fixture(scope="module")
def cluster(backfill_setup, postgres_server) -> Iterator[Cluster]:
    """The deployment, on the session's PostgreSQL server (its metadata DB dropped after)."""
    with running_cluster(
        backfill_setup["root"] / "deployment",
        env=backfill_setup["env"],
        executor="LocalExecutor",
        postgres=postgres_server,
    ) as deployment:
        yield deployment


def _get(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def _keys(client, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def test_backfill_of_ten_business_days_recomputes_each_day_and_contacts_nobody(
    cluster, backfill_setup, smtp_server, sms_server
):
    days, (first, last) = backfill_setup["days"], backfill_setup["window"]
    client, bucket = backfill_setup["client"], backfill_setup["bucket"]
    maildir = Path(smtp_server.extra["maildir"])
    mails_before = set(maildir.glob("*.eml"))
    texts_before = len(sms_sink.read_messages(Path(sms_server.extra["dir"])))
    assert len(days) == 10
    assert {address for address, _, _ in cluster.listeners()} == {"127.0.0.1"}, cluster.listeners()

    dag = cluster.wait_for_dag(DAG_ID)
    assert dag["timetable_summary"] == CRON, dag  # the config's schedule, parsed by the processor
    cluster.unpause(DAG_ID)
    started = time.monotonic()
    # What finance types (README); --to-date counts from its midnight, so Sunday's date takes
    # in Friday 06:00 and the window holds exactly the ten weekday slots (airflow3-notes 1.6).
    # The drops are generated independently per day, not as one ledger moving day by day: a
    # small currency position can go from a few hundred to zero between two of them, a 100%
    # "jump", so the jump gates are accepted for this backfill (as the trigger form allows;
    # the summary records each accepted failure).
    cluster.airflow(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        first.isoformat(),
        "--to-date",
        last.isoformat(),
        "--reprocess-behavior",
        "completed",
        "--max-active-runs",
        "1",
        "--dag-run-conf",
        json.dumps({"accept_gates": JUMP_GATES}),
    )
    # ~30 s a day on a quiet 2-core machine; beside the rest of the suite (scripts/test.sh) or
    # other deployments it was seen at ~80 s a day, so the wait allows well beyond that.
    runs = cluster.wait_for_runs(DAG_ID, len(days), run_type="backfill", timeout=1500)
    elapsed = time.monotonic() - started
    tasks = cluster.task_states(DAG_ID)
    failed = {
        r["dag_run_id"]: {t: s for t, s in tasks.get(r["dag_run_id"], {}).items() if s != "success"}
        for r in runs
        if r["state"] != "success"
    }
    assert not failed, f"failed runs and their tasks: {failed}"
    assert len(runs) == 10, [r["dag_run_id"] for r in runs]
    assert {r["run_type"] for r in runs} == {"backfill"}
    as_of = sorted(datetime.fromisoformat(r["logical_date"]).astimezone(ZONE).date() for r in runs)
    assert as_of == days
    print(
        f"\nbackfill: {len(runs)} runs in {elapsed:.0f} s; start-up {cluster.timings}; "
        f"CPU seconds {cluster.cpu_seconds()}"
    )

    previewed = 0
    for day in days:
        snapshot = _keys(client, bucket, f"snapshots/as_of={day.isoformat()}/")
        assert f"snapshots/as_of={day}/source=erp_us/invoices.parquet" in snapshot, snapshot
        assert f"snapshots/as_of={day}/source=customers/debtors.parquet" in snapshot, snapshot
        summary = json.loads(
            client.get_object(Bucket=bucket, Key=reports.summary_key(day))["Body"].read()
        )
        assert summary["as_of"] == day.isoformat()
        assert summary["backfill"] is True, summary
        assert summary["messages_sent"] == {}, summary
        assert summary["status"] == "complete", summary
        assert summary["invoices_ingested"] > 0
        # a jump the gates saw is recorded as accepted, never silently passed
        assert {g["gate"] for g in summary["accepted_gates"]} <= set(JUMP_GATES)
        assert summary["decisions_file"].startswith(f"decisions/as_of={day}/")
        assert _keys(client, bucket, summary["decisions_file"]) == [summary["decisions_file"]]
        previewed += sum(summary.get("messages_previewed", {}).values())
        tables = _keys(client, bucket, f"reports/as_of={day}/kpis/")
        assert f"reports/as_of={day}/kpis/kpis.parquet" in tables, tables
        assert _keys(client, bucket, daily.report_key(day)) == [daily.report_key(day)]
    assert previewed > 0, "the days had contacts due: they were previewed, not sent"
    # the last day's report looks back over the backfilled days: roll rates from an earlier
    # snapshot, an aging bar for every day, and a cohort from an earlier run
    last_day = days[-1]
    kpi = f"reports/as_of={last_day}/kpis/"
    rolls = pd.read_parquet(io.BytesIO(_get(client, bucket, kpi + "roll_rates.parquet")))
    aging = pd.read_parquet(io.BytesIO(_get(client, bucket, kpi + "aging.parquet")))
    recovery = pd.read_parquet(io.BytesIO(_get(client, bucket, kpi + "recovery.parquet")))
    assert len(rolls) and (rolls["from_date"] < last_day).all()
    assert set(aging["as_of"]) == set(days)
    assert len(recovery) and (recovery["cohort_date"] < last_day).all()

    assert set(maildir.glob("*.eml")) - mails_before == set()
    assert len(sms_sink.read_messages(Path(sms_server.extra["dir"]))) == texts_before
    with ledger.ledger(backfill_setup["ledger_url"]) as engine, engine.connect() as conn:
        sent = conn.execute(
            sa.select(sa.func.count())
            .select_from(ledger.Message)
            .where(ledger.Message.status == "sent")
        ).scalar()
        snapshots = conn.execute(
            sa.select(sa.func.count(sa.distinct(ledger.InvoiceSnapshot.as_of)))
        ).scalar()
    assert sent == 0
    assert snapshots == 10
    # the executor's workers and task processes started meanwhile: still loopback only
    assert {address for address, _, _ in cluster.listeners()} == {"127.0.0.1"}, cluster.listeners()
