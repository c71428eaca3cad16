"""The invariants under real operations: what an operator did to break them, through ``dag.test()``
on the real local servers, and what each now does (issue 18's findings, one test each).

- a truncated export stops the run before anything else happens, and nothing is recalled;
- a past date started late (not a backfill by type) neither places nor instructs the processor;
- a dry run never changes what the live hourly ``dunning_waves`` sends;
- a second business date while one is running is refused by name, not run into wrong books;
- a re-run after a config change sends nobody a second reminder, and keeps the decisions;
- an SMTP relay refusing everyone stops the channel loudly, and the wave goes out later;
- a NUL byte in a memo is quarantined, and the day loads on PostgreSQL.
"""

from __future__ import annotations

import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from aiosmtpd.controller import Controller

from dunning import ledger, reports, services
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


CONTACTED = ("sending", "sent", "unknown")


def _config(tmp_path) -> tuple[Path, dict]:
    path = tmp_path / "portfolio" / "config.yaml"
    return path, yaml.safe_load(path.read_text(encoding="utf-8"))


def test_a_rerun_after_a_config_change_sends_nobody_a_second_reminder(
    daily_env, s3_client, s3_bucket, tmp_path
):
    """Renaming a strategy gives its debtors new contact keys: once, 51 debtors got a second
    email that day and the first email's decision record was deleted."""
    daily_env(TODAY)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    state, tasks = run({"as_of": TODAY.isoformat()})
    assert state == "success", tasks
    before = _messages(url)
    reached = before[before["status"].isin(CONTACTED)]
    assert len(reached) > 10

    path, doc = _config(tmp_path)
    doc["strategies"]["standard_v2"] = doc["strategies"].pop("standard")
    for segment in doc["segments"]:
        if segment.get("strategy") == "standard":
            segment["strategy"] = "standard_v2"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    state, tasks = run({"as_of": TODAY.isoformat()})
    assert state == "success", tasks
    after = _messages(url)
    contacted = after[after["status"].isin(CONTACTED)]
    assert not contacted.duplicated(["debtor_id", "channel"]).any()
    assert sorted(contacted["contact_key"]) == sorted(reached["contact_key"])
    with ledger.ledger(url) as engine, engine.connect() as conn:
        decided = set(
            conn.execute(sa.select(ledger.ContactDecision.__table__.c.contact_key)).scalars()
        )
    assert set(reached["contact_key"]) <= decided  # why each was contacted: still on record


class Refusing554:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "554 5.7.1 relay access denied"


def test_a_relay_refusing_everyone_stops_email_loudly_and_the_wave_goes_out_later(
    daily_env, s3_client, s3_bucket, tmp_path, monkeypatch, smtp_server
):
    daily_env(TODAY)
    path, doc = _config(tmp_path)
    doc.setdefault("channels", {})["outage_after_refusals"] = 5
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    relay = Controller(Refusing554(), hostname="127.0.0.1", port=port)
    relay.start()
    conn = json.loads(
        services.airflow_connection_env(None, smtp_server)["AIRFLOW_CONN_SMTP_DEFAULT"]
    )
    try:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({**conn, "port": port}))
        state, tasks = run({"as_of": TODAY.isoformat()})
    finally:
        relay.stop()
    assert state == "failed" and tasks["send_email"] == "failed", tasks
    assert tasks["send_sms"] == "success" and tasks["summarize"] == "failed"  # the run shows it
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    emails = _messages(url).query("channel == 'email'")
    assert not (emails["status"] == "failed").any()  # no address blamed for the outage

    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(conn))  # the relay is back
    state, tasks = run({"as_of": TODAY.isoformat()}, dag_id="dunning_waves")
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    assert summary["messages_sent"].get("email", 0) > 5


def test_a_nul_in_a_memo_is_quarantined_and_the_day_loads_on_postgresql(
    daily_env, s3_client, s3_bucket, tmp_path, monkeypatch, postgres_server
):
    daily_env(TODAY)
    name = f"ledger_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("DUNNING_LEDGER_URL", services.create_database(postgres_server, name))
    erp = tmp_path / "portfolio" / "ar_aging_detail.csv"
    data = erp.read_bytes()
    at = data.index(b",Acct ")  # the first memo
    erp.write_bytes(data[:at] + b",Acct\x00 " + data[at + len(b",Acct ") :])
    try:
        state, tasks = run({"as_of": TODAY.isoformat()})
        assert state == "success", tasks
        summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
        assert summary["quarantine_by_reason"].get("CONTROL_CHARACTER") == 1
    finally:
        services.drop_database(postgres_server, name)
