"""dunning_daily end to end through ``dag.test()``, with the lake on the real local S3 server."""

from __future__ import annotations

import email
import email.policy
import io
import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from dunning import ledger, reports, sms_sink
from dunning.compliance import REASONS
from dunning.demo import demo_clock
from dunning.reports import SUMMARY_FIELDS, daily, html
from dunning.smtp_sink import ENVELOPE_TO
from tests.pinned import TODAY

pytestmark = [pytest.mark.services, pytest.mark.airflow]

REPO_SCREENSHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"


def run(conf: dict, dag_id: str = "dunning_daily", **test_kwargs) -> tuple[str, dict]:
    from dunning.airflow.run import run_dag

    return run_dag(dag_id, conf, **test_kwargs)


def get_bytes(client, bucket, key) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def get_json(client, bucket, key):
    return json.loads(get_bytes(client, bucket, key))


@pytest.mark.clock
def test_daily_run_puts_snapshot_and_summary_on_s3(daily_env, s3_client, s3_bucket, tmp_path):
    from tests.browser import check_page, chromium_path

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

    # the day's KPI tables for BI and the HTML report, found from the run too (the UI's tab)
    kpi_key = f"reports/as_of={TODAY.isoformat()}/kpis/"
    tables = set(_objects(s3_client, s3_bucket, kpi_key))
    for name in ("kpis", "aging", "roll_rates", "recovery", "uplift", "liquidation"):
        assert {f"{kpi_key}{name}.parquet", f"{kpi_key}{name}.csv"} <= tables
    kpis = pd.read_parquet(io.BytesIO(get_bytes(s3_client, s3_bucket, f"{kpi_key}kpis.parquet")))
    usd = kpis[kpis["currency"] == "USD"].set_index("kpi")["value"]
    assert usd["ending_ar"] > usd["overdue_ar"] > 0 and usd["dso"] > usd["best_possible_dso"] > 0
    index = get_json(s3_client, s3_bucket, daily.run_index_key(summary["run_id"]))
    assert index == {"as_of": TODAY.isoformat(), "report": daily.run_report_key(summary["run_id"])}
    assert get_bytes(s3_client, s3_bucket, index["report"]) == get_bytes(
        s3_client, s3_bucket, daily.report_key(TODAY)
    )
    page = tmp_path / "report.html"
    page.write_bytes(get_bytes(s3_client, s3_bucket, daily.report_key(TODAY)))
    for plot in html.PLOTS:
        assert f'id="plot-{plot}"' in page.read_text()
    if chromium_path():
        shot = REPO_SCREENSHOTS / "e2e-report-first-day.png"
        facts = check_page(page.as_uri(), shot, width=1200)
        assert facts["requests"] == []  # self-contained: opens from a mailbox or offline
        assert "Dunning report" in facts["title"] and "DSO" in facts["text"]


def with_firm_letters(config: Path) -> None:
    """The generated portfolio rarely has anyone at the final-notice step on a given day: send
    the firm reminder as a letter too, so the print batch has something in it."""
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    doc.pop("experiments", None)  # an arm's replacement template has no letter version
    for strategy in doc["strategies"].values():
        for step in strategy["steps"]:
            if step["template"] in ("reminder_overdue", "reminder_firm"):
                step["channels"] = [*step["channels"], "letter"]
    config.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _new_files(folder: Path, before: set[Path]) -> list[Path]:
    return sorted(set(folder.glob("*.eml")) - before)


def _objects(client, bucket, prefix) -> list[str]:
    return [
        o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    ]


def test_the_wave_reaches_every_channel_exactly_once(
    daily_env, s3_client, s3_bucket, smtp_server, sms_server, tmp_path
):
    from tests.browser import chromium_path

    daily_env(TODAY, debtors=400)  # enough for every channel and language on any day
    with_firm_letters(tmp_path / "portfolio" / "config.yaml")
    maildir, sms_dir = Path(smtp_server.extra["maildir"]), Path(sms_server.extra["dir"])
    mail_before, sms_before = set(maildir.glob("*.eml")), len(sms_sink.read_messages(sms_dir))
    state, tasks = run({"as_of": TODAY.isoformat()})
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    sent = summary["messages_sent"]
    assert summary["sending"] == "send"
    assert {"email", "sms", "letter", "call"} <= set(sent), sent
    with ledger.ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as engine, engine.connect() as c:
        rows = pd.read_sql(sa.select(ledger.Message.__table__), c).set_index("contact_key")
    assert rows[rows["status"] == "sent"].groupby("channel").size().to_dict() == sent
    wave = pd.read_parquet(
        io.BytesIO(s3_client.get_object(Bucket=s3_bucket, Key=summary["wave_file"])["Body"].read())
    ).set_index("contact_key")

    # email: one MIME message per contact, with the opt-out headers, in the debtor's language
    files = _new_files(maildir, mail_before)
    assert len(files) == sent["email"]
    locales = set()
    for path in files:
        with path.open("rb") as fh:
            msg = email.message_from_binary_file(fh, policy=email.policy.default)
        contact = str(msg["X-Dunning-Contact"])
        row = rows.loc[contact]
        assert row["status"] == "sent" and row["provider_id"] == str(msg["Message-ID"])
        assert row["recipient"] in str(msg[ENVELOPE_TO])
        assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
        assert str(msg["List-Unsubscribe"]).strip().startswith("<https://")  # may be folded
        assert str(msg["Content-Language"]) == row["locale"]
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert wave.loc[contact, "balance"] in text  # the total, formatted for the locale
        assert wave.loc[contact, "page_url"] in text
        if row["locale"] == "ar":
            assert 'dir="rtl"' in html
        locales.add(row["locale"])
    assert {"en", "fr", "ar"} <= locales

    # sms: every request reached the provider, each with its STOP line
    texts = sms_sink.read_messages(sms_dir)[sms_before:]
    assert len(texts) == sent["sms"]
    assert all("STOP" in t["body"] for t in texts)

    # letters: one print-ready PDF plus its manifest; calls: the dialer queue
    letters = _objects(s3_client, s3_bucket, f"outbox/letters/as_of={TODAY}/")
    pdf = [k for k in letters if k.endswith(".pdf")]
    assert len(pdf) == 1 and any(k.endswith(".csv") for k in letters)
    body = s3_client.get_object(Bucket=s3_bucket, Key=pdf[0])["Body"].read()
    assert body.startswith(b"%PDF-")
    queue = _objects(s3_client, s3_bucket, f"outbox/calls/as_of={TODAY}/")
    calls = pd.read_csv(
        io.BytesIO(s3_client.get_object(Bucket=s3_bucket, Key=queue[0])["Body"].read())
    )
    assert len(calls) == sent["call"]
    assert calls["window_start_utc"].notna().all()

    # the payment page, through its presigned link, in headless Chromium (an Arabic one)
    if chromium_path():
        from tests.browser import check_page

        arabic = rows[(rows["locale"] == "ar") & (rows["status"] == "sent")].index[0]
        shot = REPO_SCREENSHOTS / f"e2e-payment-page-{rows.loc[arabic, 'locale']}.png"
        facts = check_page(wave.loc[arabic, "page_url"], shot)
        assert facts["direction"] == "rtl" and facts["pay_visible"]
        assert facts["scroll_width"] <= facts["viewport_width"]
        assert wave.loc[arabic, "balance"] in facts["text"]
        assert shot.stat().st_size > 5_000

    # the same day again: nothing new reaches anybody, the summary still counts the day
    state, tasks = run({"as_of": TODAY.isoformat()})
    assert state == "success", tasks
    assert _new_files(maildir, mail_before) == files
    assert len(sms_sink.read_messages(sms_dir)) - sms_before == sent["sms"]
    assert get_json(s3_client, s3_bucket, reports.summary_key(TODAY))["messages_sent"] == sent


def test_contacts_outside_their_hours_wait_for_a_later_wave_of_the_day(
    daily_env, s3_client, s3_bucket, pin_clock, tmp_path
):
    daily_env(TODAY)
    # 14:30 UTC: morning in New York, but 06:30 in Los Angeles -- too early for some debtors
    pin_clock(f"{TODAY.isoformat()}T14:30:00+00:00")
    state, tasks = run({"as_of": TODAY.isoformat()})
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    waiting = sum(summary["messages_waiting"].values())
    assert waiting > 0, summary["messages_waiting"]
    sent_early = summary["messages_sent"]

    pin_clock(f"{TODAY.isoformat()}T17:30:00+00:00")  # 09:30 in LA
    state, tasks = run({"as_of": TODAY.isoformat()}, dag_id="dunning_waves")
    assert state == "success", tasks
    later = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))["messages_sent"]
    assert sum(later.values()) > sum(sent_early.values())
    with ledger.ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as engine, engine.connect() as c:
        rows = pd.read_sql(sa.select(ledger.Message.__table__), c)
    assert rows["contact_key"].is_unique
    assert (rows["status"] == "sent").sum() == sum(later.values())


@pytest.mark.clock
def test_past_date_is_a_backfill_that_previews_and_sends_nothing(
    daily_env, s3_client, s3_bucket, smtp_server, pin_clock
):
    past = TODAY - timedelta(days=10)
    daily_env(past)  # the portfolio as it stood then, the run started today
    pin_clock(demo_clock(TODAY))
    maildir = Path(smtp_server.extra["maildir"])
    before = set(maildir.glob("*.eml"))
    state, tasks = run({"as_of": past.isoformat()})
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(past))
    assert summary["backfill"] is True
    assert summary["sending"] == "backfill" and summary["messages_sent"] == {}
    assert sum(summary["messages_previewed"].values()) > 0
    previews = _objects(s3_client, s3_bucket, summary["previews"] + "/")
    assert any(k.endswith(".html") for k in previews)
    assert _new_files(maildir, before) == []

    state, tasks = run(
        {"as_of": past.isoformat(), "force_send": True, "force_reason": ""}
    )  # forcing needs a reason
    assert state == "failed" and tasks["resolve_run"] == "failed"


def test_wrong_source_stops_the_run_before_the_ledger(
    daily_env, s3_client, s3_bucket, tmp_path, smtp_server
):
    daily_env(TODAY)
    mail_before = set(Path(smtp_server.extra["maildir"]).glob("*.eml"))
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
    # the collections team is told, once, with the run to look at and no debtor data
    alerts = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in _new_files(Path(smtp_server.extra["maildir"]), mail_before)
    ]
    assert [m["Subject"] for m in alerts] == [
        f"Dunning: dunning_daily run {summary['run_id']} failed"
    ]
    assert alerts[0]["To"] == "collections-ops@example.com"


def test_run_without_logical_date_takes_the_day_it_was_due(daily_env, s3_client, s3_bucket):
    """A run triggered with no logical date (allowed in Airflow 3) is for the day it was due,
    in the portfolio's time zone; the generated config schedules in America/New_York."""
    daily_env(TODAY)  # the clock: TODAY 16:30 UTC, 11:30 in New York
    state, tasks = run({}, logical_date=None)
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    assert summary["backfill"] is False


def test_sources_param_reruns_part_of_a_day_and_rejects_unknown_names(
    daily_env, s3_client, s3_bucket, tmp_path
):
    """Re-running one source after a late file touches only that source: the others come as the
    day's run left them, so nobody goes missing, changes segment, or hears from us again."""
    daily_env(TODAY)
    part = {"as_of": TODAY.isoformat(), "sources": ["customers", "erp_us"]}
    state, tasks = run(part)  # no day to be partial about yet
    assert state == "failed" and tasks["validate"] == "failed", tasks
    state, tasks = run({"as_of": TODAY.isoformat()})
    assert state == "success", tasks
    whole = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    plan = pd.read_parquet(io.BytesIO(get_bytes(s3_client, s3_bucket, whole["plan_file"])))
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with ledger.ledger(url) as engine, engine.connect() as c:
        sent = pd.read_sql(sa.select(ledger.Message.__table__), c)

    state, tasks = run(part)
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    assert set(summary["sources"]) == {"customers", "erp_us", "ar_db"}  # ar_db as it was
    assert summary["debtors_by_segment"] == whole["debtors_by_segment"]
    again = pd.read_parquet(io.BytesIO(get_bytes(s3_client, s3_bucket, summary["plan_file"])))
    assert sorted(again["contact_key"]) == sorted(plan["contact_key"])
    with ledger.ledger(url) as engine, engine.connect() as c:
        after = pd.read_sql(sa.select(ledger.Message.__table__), c)
    assert sorted(after["contact_key"]) == sorted(sent["contact_key"])  # nobody heard twice

    # the form offers the configured sources only, so a typo is refused before any run exists
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="erp_uk"):
        run({"as_of": TODAY.isoformat(), "sources": ["erp_uk"]})
