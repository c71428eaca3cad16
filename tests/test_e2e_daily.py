"""dunning_daily end to end through ``dag.test()``, with the lake on the real local S3 server."""

from __future__ import annotations

import io
import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import sqlalchemy as sa

from dunning import ledger, reports, services
from dunning.compliance import REASONS
from dunning.generate import generate
from dunning.reports import SUMMARY_FIELDS

pytestmark = [pytest.mark.services, pytest.mark.airflow]

TODAY = date.today()


@pytest.fixture
def daily_env(airflow_db, s3_server, s3_bucket, tmp_path, monkeypatch):
    """Point the DAG at a fresh bucket, ledger and (per test) portfolio."""
    for key, value in services.airflow_connection_env(s3_server, None).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DUNNING_LAKE", f"s3://dunning_s3@{s3_bucket}/")
    monkeypatch.setenv("DUNNING_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")

    def use(as_of: date, debtors: int = 150) -> dict:
        counts = generate(tmp_path / "portfolio", debtors=debtors, as_of=as_of, seed=11)
        monkeypatch.setenv("DUNNING_CONFIG", str(tmp_path / "portfolio" / "config.yaml"))
        return counts

    return use


def run(conf: dict, **test_kwargs) -> tuple[str, dict]:
    from dunning.airflow.run import run_dag

    return run_dag("dunning_daily", conf, **test_kwargs)


def get_json(client, bucket, key):
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_daily_run_puts_snapshot_and_summary_on_s3(daily_env, s3_client, s3_bucket, tmp_path):
    generated = daily_env(TODAY)
    state, tasks = run({"as_of": TODAY.isoformat()})
    assert state == "success", tasks
    assert {t for t in tasks if t.startswith("extract[")} == {
        "extract[0]",
        "extract[1]",
        "extract[2]",
    }

    summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    assert set(SUMMARY_FIELDS) <= set(summary)
    assert summary["as_of"] == TODAY.isoformat()
    assert summary["backfill"] is False
    open_invoices = generated["counts"]["open_invoices"]
    # every open invoice of both AR systems is either in the snapshot or in the quarantine
    invoice_rows = sum(
        s["rows_read"] for s in summary["sources"].values() if s["dataset"] == "invoices"
    )
    assert invoice_rows == open_invoices
    assert summary["invoices_ingested"] > 0.9 * open_invoices
    assert set(summary["sources"]) == {"erp_us", "ar_db", "customers"}
    assert summary["status"] == "complete"
    assert summary["debtors_due"] > 0
    assert summary["contacts_planned"] >= summary["debtors_due"]
    assert sum(summary["debtors_by_segment"].values()) == sum(summary["debtors_by_bucket"].values())
    plan = s3_client.get_object(Bucket=s3_bucket, Key=summary["plan_file"])["Body"].read()
    planned = pd.read_parquet(io.BytesIO(plan))
    assert len(planned) == summary["contacts_planned"]
    assert planned["contact_key"].is_unique

    # every planned contact has a decision; the blocked ones are counted by reason
    body = s3_client.get_object(Bucket=s3_bucket, Key=summary["decisions_file"])["Body"].read()
    decisions = pd.read_parquet(io.BytesIO(body))
    assert sorted(decisions["contact_key"]) == sorted(planned["contact_key"])
    blocked = decisions[decisions["status"] == "blocked"]
    assert summary["contacts_allowed"] + summary["contacts_scheduled"] + len(blocked) == len(
        decisions
    )
    assert set(summary["contacts_suppressed"]) <= set(REASONS)
    assert summary["contacts_suppressed"], "a generated portfolio has opt-outs and consents"
    for code, n in summary["contacts_suppressed"].items():
        assert n == int(blocked[code].sum())
    assert (decisions["rules_version"] == summary["rules_version"]).all()
    assert decisions.loc[decisions["status"] != "blocked", "send_at"].notna().all()

    keys = {
        o["Key"]
        for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="snapshots/")["Contents"]
    }
    day = f"snapshots/as_of={TODAY.isoformat()}"
    assert f"{day}/source=erp_us/invoices.parquet" in keys
    assert f"{day}/source=ar_db/invoices.parquet" in keys
    assert f"{day}/source=customers/debtors.parquet" in keys

    with ledger.ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as engine, engine.connect() as c:
        loaded = c.execute(sa.select(sa.func.count()).select_from(ledger.InvoiceSnapshot)).scalar()
    assert loaded == summary["invoices_ingested"]


def test_past_date_is_a_backfill(daily_env, s3_client, s3_bucket):
    past = TODAY - timedelta(days=10)
    daily_env(past)
    state, tasks = run({"as_of": past.isoformat()})
    assert state == "success", tasks
    assert get_json(s3_client, s3_bucket, reports.summary_key(past))["backfill"] is True


def test_wrong_source_stops_the_run_before_the_ledger(daily_env, s3_client, s3_bucket, tmp_path):
    daily_env(TODAY)
    erp = tmp_path / "portfolio" / "ar_aging_detail.csv"
    text = erp.read_bytes()
    total_at = text.rindex(b"Grand Total")
    erp.write_bytes(text[:total_at] + text[total_at:].replace(b'","$', b'","$9', 1))  # open balance

    state, tasks = run({"as_of": TODAY.isoformat()})
    assert state == "failed"
    assert tasks["validate"] == "failed"
    assert tasks["load_ledger"] == "upstream_failed"
    assert tasks["plan"] == "upstream_failed"  # nobody is planned, let alone contacted
    assert tasks["summarize"] == "failed"  # it writes the summary, then marks the run failed
    summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    assert summary["status"] == "stopped"
    assert [f["gate"] for f in summary["gate_failures"]] == ["CONTROL_TOTAL"]
    assert summary["invoices_ingested"] == 0
    assert summary["contacts_planned"] is None


def test_run_without_logical_date_takes_the_day_it_was_due(daily_env, s3_client, s3_bucket):
    """A run triggered with no logical date (allowed in Airflow 3) is for the day it was due,
    in the portfolio's time zone; the generated config schedules in America/New_York."""
    today_there = datetime.now(ZoneInfo("America/New_York")).date()
    daily_env(today_there)
    state, tasks = run({}, logical_date=None)
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(today_there))
    assert summary["backfill"] is False


def test_sources_param_limits_the_run_and_rejects_unknown_names(daily_env, s3_client, s3_bucket):
    daily_env(TODAY)
    state, tasks = run({"as_of": TODAY.isoformat(), "sources": ["customers", "erp_us"]})
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    assert set(summary["sources"]) == {"customers", "erp_us"}

    state, tasks = run({"as_of": TODAY.isoformat(), "sources": ["erp_uk"]})
    assert state == "failed"
    assert tasks["select_sources"] == "failed"
    assert "extract" not in {t.split("[")[0] for t, s in tasks.items() if s == "success"}
