"""The invariants under real operations: what an operator did to break them, through ``dag.test()``
on the real local servers, and what each now does (issue 18's findings, one test each).

- a truncated export stops the run before anything else happens, and nothing is recalled;
- a past date started late (not a backfill by type) neither places nor instructs the processor;
- a dry run never changes what the live hourly ``dunning_waves`` sends;
- a second business date while one is running is refused by name, not run into wrong books.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from dunning import ledger, reports
from dunning.demo import demo_clock
from tests.pinned import TODAY
from tests.test_e2e_daily import _new_files, _objects, get_json, run

pytestmark = [pytest.mark.services, pytest.mark.airflow]

YESTERDAY = TODAY - timedelta(days=1)


def _placements(url: str) -> pd.DataFrame:
    with ledger.ledger(url) as engine, engine.connect() as conn:
        return pd.read_sql(sa.select(ledger.PlacedAccount.__table__), conn)


def _messages(url: str) -> pd.DataFrame:
    with ledger.ledger(url) as engine, engine.connect() as conn:
        return pd.read_sql(sa.select(ledger.Message.__table__), conn)


def _noon(day) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)


def test_a_truncated_export_stops_the_day_and_recalls_nobody(
    daily_env, s3_client, s3_bucket, tmp_path, pin_clock
):
    """The ERP export cut at 60 % mid-row has lost its grand totals: every row it still has would
    pass, and the placed debtors missing from it were once recalled as PAID."""
    daily_env(YESTERDAY, debtors=300)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    pin_clock(_noon(YESTERDAY))
    state, tasks = run({"as_of": YESTERDAY.isoformat()})
    assert state == "success", tasks
    placed = _placements(url)
    assert len(placed) > 5 and set(placed["status"]) == {"active"}
    delivered = set(_objects(s3_client, s3_bucket, "placements/"))

    erp = tmp_path / "portfolio" / "ar_aging_detail.csv"
    data = erp.read_bytes()
    erp.write_bytes(data[: int(len(data) * 0.6)])  # the transfer broke off mid-row
    pin_clock(demo_clock(TODAY))
    state, tasks = run({"as_of": TODAY.isoformat()})
    assert state == "failed" and tasks["validate"] == "failed", tasks
    assert tasks["place"] == "upstream_failed" and tasks["send_email"] == "upstream_failed"
    summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    assert summary["status"] == "stopped"
    gates = {(f["source"], f["gate"]) for f in summary["gate_failures"]}
    assert ("erp_us", "CONTROL_TOTAL_MISSING") in gates
    assert summary["sources"]["erp_us"]["completeness"] == "control_totals"
    # Every placed account is still placed; not one recall file went out.
    after = _placements(url)
    assert set(after["status"]) == {"active"} and len(after) == len(placed)
    assert set(_objects(s3_client, s3_bucket, "placements/")) == delivered
    assert _messages(url)["as_of"].astype(str).eq(YESTERDAY.isoformat()).all()


def test_a_past_date_started_late_neither_places_nor_instructs_the_processor(
    daily_env, s3_client, s3_bucket, tmp_path, pin_clock
):
    """A cleared old scheduled run: its logical date and run_after are both in the past, so it
    is not a backfill by type; the product clock says its day is over, so it is late."""
    daily_env(YESTERDAY, debtors=300)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    pin_clock(demo_clock(TODAY))  # the run starts today ...
    state, tasks = run({"as_of": YESTERDAY.isoformat()}, run_after=_noon(YESTERDAY))  # ... due then
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(YESTERDAY))
    assert summary["backfill"] is False and summary["mode"] == "late"
    assert summary["sending"] == "late" and summary["messages_sent"] == {}
    assert summary["placement"]["mode"] == "skipped" and summary["placement"]["would_place"] > 0
    assert summary["placement_files"] == [] and _placements(url).empty
    assert _objects(s3_client, s3_bucket, "placements/") == []
    assert summary["payments"]["retries"].endswith(".preview.csv")  # reviewed, never sent
    assert _messages(url).empty


def test_a_dry_run_never_becomes_what_the_hourly_waves_send(
    daily_env, s3_client, s3_bucket, tmp_path, smtp_server
):
    daily_env(TODAY)
    maildir = Path(smtp_server.extra["maildir"])
    before = set(maildir.glob("*.eml"))
    state, tasks = run({"as_of": TODAY.isoformat(), "dry_run": True})
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    assert summary["mode"] == "dry_run" and summary["wave_file"].startswith("previews/")
    assert _objects(s3_client, s3_bucket, f"waves/as_of={TODAY}/") == []

    state, tasks = run({"as_of": TODAY.isoformat()}, dag_id="dunning_waves")
    assert state == "success", tasks
    assert tasks["todays_wave"] == "skipped", tasks  # no live wave: the senders do nothing
    assert _new_files(maildir, before) == []
    assert _messages(f"sqlite:///{tmp_path / 'ledger.sqlite'}").empty


def test_a_second_date_while_one_runs_is_refused_by_name(daily_env, tmp_path):
    daily_env(TODAY)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledger.migrate(url)
    with ledger.ledger(url) as engine:  # a backfill of last week is under way
        ledger.take_lease(
            engine, "dunning_daily", TODAY - timedelta(days=7), "backfill__x", _noon(TODAY), 12
        )
    state, tasks = run({"as_of": TODAY.isoformat()})
    assert state == "failed" and tasks["resolve_run"] == "failed", tasks
    assert tasks["extract"] == "upstream_failed" and tasks["place"] == "upstream_failed"
    with ledger.ledger(url) as engine, engine.connect() as conn:
        (held,) = conn.execute(sa.select(ledger.RunLease.__table__)).all()
    assert held.run_id == "backfill__x"  # the refused run took nothing and released nothing
