"""History load: full exports replace the ledger's history, bad rows are quarantined, not lost."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from upath import UPath

from dunning import history, lake, ledger
from dunning.config import load_config

AS_OF = date(2026, 11, 23)

INVOICES = """invoice_id,debtor_id,doc_type,issue_date,due_date,currency,amount,open_amount,paid_date,disputed
INV-1,D1,invoice,2026-01-01,2026-01-31,USD,100.00,0.00,2026-02-10,false
INV-2,D1,invoice,2026-02-01,2026-03-03,USD,250.50,250.50,,true
INV-3,D2,invoice,2026-13-01,2026-02-01,USD,10.00,10.00,,false
INV-4,D2,invoice,2026-01-05,2026-02-05,JPY,1000.5,0,2026-02-01,false
CN-1,D2,credit_note,2026-01-05,2026-01-05,JPY,-500,0,,false
"""
PAYMENTS = """payment_id,debtor_id,paid_on,currency,amount,method,reference
P1,D1,2026-02-10,USD,100.00,ach,INV-1
P2,,2026-02-11,USD,5.00,wire,unknown payer
P3,D2,2026-02-12,USD,abc,ach,
P1,D1,2026-02-10,USD,100.00,ach,INV-1
"""
CONTACTS = """contact_id,debtor_id,at,channel,template,outcome,connected,conversation
C1,D1,2026-02-07T09:30:00Z,email,reminder_1,delivered,,
C2,D1,2026-02-08T15:00:00Z,call,call_1,promise_to_pay,true,true
C3,D2,2026-02-09T10:00:00Z,pigeon,reminder_1,delivered,,
"""
EVENTS = """debtor_id,event,channel,effective_date,detail
D1,dispute_opened,,2026-02-02,"{""invoice_id"":""INV-2""}"
D2,opt_out,sms,2026-03-01,
D2,=cmd(),,2026-03-01,
D2,maybe_later,,2026-03-01,
D2,opt_out,,2026-03-01,
D2,inconvenient_time,call,2026-03-01,"{""start"":""25:00"",""end"":""14:00""}"
D1,inconvenient_time,call,2026-03-01,"{""weekdays"":[5,6],""start"":""08:00"",""end"":""12:00""}"
"""


def write_portfolio(folder: Path, invoices: str = INVOICES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("invoice_history.csv", invoices),
        ("payments.csv", PAYMENTS),
        ("contact_history.csv", CONTACTS),
        ("compliance_events.csv", EVENTS),
    ):
        (folder / name).write_text(text, encoding="utf-8")
    cfg = {
        "portfolio": {"name": "Test"},
        "gates": {"max_quarantine_share": 0.6},  # these tiny files are half bad rows on purpose
        "sources": [{"name": "erp", "path": "aging.csv", "columns": {"a": "invoice_id"}}],
        "history": {
            "invoices": "invoice_history.csv",
            "payments": "payments.csv",
            "contacts": "contact_history.csv",
            "compliance_events": "compliance_events.csv",
        },
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return folder / "config.yaml"


@pytest.fixture
def engine(ledger_engine):
    return ledger_engine


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_load_counts_minor_units_and_quarantine(tmp_path, engine):
    cfg = load_config(write_portfolio(tmp_path / "p"))
    root = UPath(tmp_path / "lake")
    result = history.load_history(cfg, engine, root, AS_OF)

    assert result["read"] == {"invoices": 5, "payments": 4, "contacts": 3, "compliance_events": 7}
    assert result["loaded"] == {"invoices": 3, "payments": 2, "contacts": 2, "compliance_events": 3}
    assert result["rows_quarantined"] == 2 + 2 + 1 + 4
    assert result["quarantine"] == "quarantine/as_of=2026-11-23/history.parquet"

    q = lake.read_parquet(root / result["quarantine"])
    got = set(zip(q["source_file"], q["source_row"], q["field"], q["reason"], strict=True))
    assert ("invoice_history.csv", 4, "issue_date", "BAD_DATE") in got  # line 4 of the file
    assert ("invoice_history.csv", 5, "amount", "BAD_AMOUNT") in got  # JPY has no decimals
    assert ("payments.csv", 4, "amount", "BAD_AMOUNT") in got
    assert ("payments.csv", 5, "payment_id", "DUPLICATE_ID") in got  # exact repeat of line 2
    assert ("contact_history.csv", 4, "channel", "BAD_VALUE") in got
    assert ("compliance_events.csv", 4, "debtor_id", "FORMULA_CELL") not in got
    assert ("compliance_events.csv", 4, "event", "BAD_VALUE") in got
    assert ("compliance_events.csv", 5, "event", "BAD_VALUE") in got  # not a known event
    assert ("compliance_events.csv", 6, "channel", "MISSING_FIELD") in got  # opt out of what?
    assert ("compliance_events.csv", 7, "detail", "BAD_VALUE") in got  # 25:00
    assert (root / result["quarantine"].replace(".parquet", ".csv")).exists()

    with engine.connect() as conn:
        inv = {r.invoice_id: r for r in conn.execute(sa.select(ledger.InvoiceHistory))}
        assert inv["INV-2"].amount_minor == 25050 and inv["INV-2"].disputed is True
        assert inv["INV-1"].paid_date == date(2026, 2, 10)
        assert inv["CN-1"].amount_minor == -500  # JPY: exponent 0
        pay = {r.payment_id: r for r in conn.execute(sa.select(ledger.Payment))}
        assert pay["P2"].debtor_id is None and pay["P2"].amount_minor == 500
        calls = conn.execute(sa.select(ledger.ContactAttempt).order_by("contact_id")).all()
        assert calls[0].connected is None
        assert calls[1].connected is True and calls[1].at.hour == 15  # time of day kept


def test_reload_replaces_instead_of_appending(tmp_path, engine):
    cfg_path = write_portfolio(tmp_path / "p")
    root = UPath(tmp_path / "lake")
    history.load_history(load_config(cfg_path), engine, root, AS_OF)
    history.load_history(load_config(cfg_path), engine, root, AS_OF)
    assert count(engine, ledger.InvoiceHistory) == 3
    assert count(engine, ledger.Payment) == 2
    assert count(engine, ledger.ComplianceEvent) == 3

    # the next export lost INV-2: the ledger follows the export
    fewer = "\n".join(line for line in INVOICES.splitlines() if not line.startswith("INV-2"))
    write_portfolio(tmp_path / "p", invoices=fewer + "\n")
    result = history.load_history(load_config(cfg_path), engine, root, AS_OF)
    assert result["loaded"]["invoices"] == 2
    with engine.connect() as conn:
        ids = set(conn.execute(sa.select(ledger.InvoiceHistory.invoice_id)).scalars())
    assert ids == {"INV-1", "CN-1"}


def test_unconfigured_history_is_skipped(tmp_path, engine):
    cfg_path = write_portfolio(tmp_path / "p")
    raw = yaml.safe_load(cfg_path.read_text())
    raw["history"] = {"payments": "payments.csv"}
    cfg_path.write_text(yaml.safe_dump(raw))
    result = history.load_history(load_config(cfg_path), engine, UPath(tmp_path / "lake"), AS_OF)
    assert set(result["loaded"]) == {"payments"}
    assert count(engine, ledger.InvoiceHistory) == 0


def test_ragged_line_is_quarantined_with_its_line(tmp_path, engine):
    cfg_path = write_portfolio(tmp_path / "p")
    (tmp_path / "p" / "payments.csv").write_text(
        PAYMENTS.splitlines()[0]
        + "\nP9,D1,2026-02-10,USD,1.00,ach\nP8,D1,2026-02-10,USD,1.00,ach,x\n"
    )
    root = UPath(tmp_path / "lake")
    result = history.load_history(load_config(cfg_path), engine, root, AS_OF)
    q = lake.read_parquet(root / result["quarantine"])
    bad = q[q["source_file"] == "payments.csv"]
    assert list(bad["reason"]) == ["MALFORMED_LINE"] and list(bad["source_row"]) == [2]
    assert result["loaded"]["payments"] == 1
    assert isinstance(q, pd.DataFrame)


def test_mostly_bad_export_keeps_the_previous_history(tmp_path, engine):
    from dunning.quality import SourceGateError

    cfg_path = write_portfolio(tmp_path / "p")
    root = UPath(tmp_path / "lake")
    manifest = root / history.load_history(load_config(cfg_path), engine, root, AS_OF)["mirror"]
    assert manifest.exists()
    # a layout change: amounts now carry a currency suffix, every invoice row is rejected
    broken = INVOICES.replace(".00,", ".00 USD,").replace(".50,", ".50 USD,")
    write_portfolio(tmp_path / "p", invoices=broken)
    with pytest.raises(SourceGateError, match="QUARANTINE_SHARE"):
        history.load_history(load_config(cfg_path), engine, root, AS_OF)
    assert count(engine, ledger.InvoiceHistory) == 3  # rolled back, nothing replaced
    assert not manifest.exists()  # dropped before the reload began: features read the ledger
    q = lake.read_parquet(root / "quarantine/as_of=2026-11-23/history.parquet")
    assert (q["source_file"] == "invoice_history.csv").sum() >= 3


def test_compliance_events_can_come_from_a_database_query(tmp_path, engine):
    import yaml

    cfg_path = write_portfolio(tmp_path / "p")
    crm = sa.create_engine(f"sqlite:///{tmp_path / 'p' / 'crm.sqlite'}")
    with crm.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE compliance_events (debtor_id TEXT, event TEXT, channel TEXT, "
                "effective_date TEXT, detail TEXT)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO compliance_events VALUES (:d, :e, :c, :t, NULL)"),
            [
                {"d": "D1", "e": "cease_communication", "c": None, "t": "2026-03-01"},
                {"d": "D2", "e": "opt_out", "c": None, "t": "2026-03-02"},  # which channel?
                {"d": "D2", "e": "consent", "c": "sms", "t": "2027-01-01"},  # after as_of
            ],
        )
    crm.dispose()
    raw = yaml.safe_load(cfg_path.read_text())
    raw["history"]["compliance_events"] = {
        "url": "sqlite:///crm.sqlite",  # relative to the config file
        "query": "compliance_events.sql",
    }
    cfg_path.write_text(yaml.safe_dump(raw))
    root = UPath(tmp_path / "lake")
    result = history.load_history(load_config(cfg_path), engine, root, AS_OF)

    assert result["read"]["compliance_events"] == 2  # the query's :as_of left out 2027
    assert result["loaded"]["compliance_events"] == 1
    q = lake.read_parquet(root / result["quarantine"])
    got = set(zip(q["source_file"], q["source_row"], q["field"], q["reason"], strict=True))
    assert ("compliance_events.sql", 2, "channel", "MISSING_FIELD") in got
    with engine.connect() as conn:
        events = conn.execute(sa.select(ledger.ComplianceEvent.event)).scalars().all()
    assert events == ["cease_communication"]
