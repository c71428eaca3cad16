"""The ledger on SQLite and PostgreSQL: migrations, idempotent loads, drift baselines."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from dunning import lake, ledger
from dunning.config import load_config
from dunning.quality import validate_to_lake
from dunning.sources import extract_to_lake
from tests.factories import customer, invoice, write_portfolio


def load_day(tmp_path, url, as_of, rows, customers=None):
    folder = tmp_path / as_of.isoformat()
    cfg = load_config(
        write_portfolio(
            folder,
            rows,
            customers,
            erp_as_of=as_of.strftime("%d/%m/%Y"),
            gates={"max_row_change_share": 10, "max_balance_change_share": 10_000},
        )
    )
    root = lake.root((tmp_path / "lake").as_uri())
    extracts = [extract_to_lake(cfg, s.name, as_of, root) for s in cfg.sources]
    with ledger.ledger(url) as engine:
        validated = validate_to_lake(
            cfg, as_of, root, extracts, ledger.previous_snapshots(engine, as_of)
        )
        return ledger.load_from_lake(engine, as_of, root, validated)


def count(url, table, **where):
    with ledger.ledger(url) as engine, engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(sa.table(table))
        for col, value in where.items():
            query = query.where(sa.column(col) == value)
        return conn.execute(query).scalar_one()


def test_migrations_create_the_schema_and_are_idempotent(ledger_url):
    ledger.migrate(ledger_url)
    ledger.migrate(ledger_url)
    with ledger.ledger(ledger_url) as engine:
        tables = set(sa.inspect(engine).get_table_names())
    assert {"snapshots", "debtors", "invoice_snapshots", "quarantine", "alembic_version"} <= tables


def test_rerunning_a_day_replaces_it(tmp_path, ledger_url):
    ledger.migrate(ledger_url)
    day = date(2026, 11, 23)
    rows = [invoice("INV-1"), invoice("INV-2", Memo="=bad()")]
    first = load_day(tmp_path, ledger_url, day, rows)
    second = load_day(tmp_path, ledger_url, day, rows)
    assert first == second == {"invoices": 1, "debtors": 1, "quarantine": 1}
    assert count(ledger_url, "invoice_snapshots") == 1
    assert count(ledger_url, "quarantine") == 1
    assert count(ledger_url, "snapshots") == 2  # one per source


def test_days_accumulate_and_debtors_keep_first_seen(tmp_path, ledger_url):
    ledger.migrate(ledger_url)
    d1, d2 = date(2026, 11, 22), date(2026, 11, 23)
    load_day(tmp_path, ledger_url, d1, [invoice("INV-1")])
    big = "$9,999,999.99"
    load_day(
        tmp_path,
        ledger_url,
        d2,
        [invoice("INV-1"), invoice("INV-2", Amount=big, **{"Open Balance": big})],
        [customer("D001", email="new@example.com")],
    )
    assert count(ledger_url, "invoice_snapshots", as_of=d1) == 1
    assert count(ledger_url, "invoice_snapshots", as_of=d2) == 2
    with ledger.ledger(ledger_url) as engine, engine.connect() as conn:
        debtor = conn.execute(sa.select(ledger.Debtor.__table__)).one()
        total = conn.execute(sa.select(sa.func.max(ledger.InvoiceSnapshot.open_minor))).scalar_one()
        previous = ledger.previous_snapshots(engine, date(2026, 11, 24))
    assert (debtor.first_seen_as_of, debtor.last_seen_as_of) == (d1, d2)
    assert debtor.email == "new@example.com"
    assert total == 999_999_999  # exact minor units, no float on the way
    assert previous["erp_us"]["as_of"] == "2026-11-23"
    assert previous["erp_us"]["rows"] == 2


@pytest.mark.clock
def test_backfill_never_brings_back_old_consent_or_opt_outs(tmp_path, ledger_url):
    ledger.migrate(ledger_url)
    today, past = date(2026, 11, 23), date(2026, 11, 10)
    gates = {"max_row_change_share": 10, "max_balance_change_share": 10_000}
    now = customer("D001", consent_sms="false", opted_out="email")
    before = customer("D001", consent_sms="true", opted_out="")
    for day, person in ((today, now), (past, before)):
        folder = tmp_path / day.isoformat()
        cfg = load_config(
            write_portfolio(
                folder,
                [invoice("INV-1")],
                [person],
                erp_as_of=day.strftime("%d/%m/%Y"),
                gates=gates,
            )
        )
        root = lake.root((tmp_path / "lake").as_uri())
        extracts = [extract_to_lake(cfg, s.name, day, root) for s in cfg.sources]
        with ledger.ledger(ledger_url) as engine:
            validated = validate_to_lake(cfg, day, root, extracts, {})
            ledger.load_from_lake(engine, day, root, validated)
    with ledger.ledger(ledger_url) as engine, engine.connect() as conn:
        row = conn.execute(sa.select(ledger.Debtor.__table__)).one()
    assert (row.consent_sms, row.opted_out) == (False, "email")
    assert (row.first_seen_as_of, row.last_seen_as_of) == (past, today)


@pytest.mark.services
def test_postgres_copy_keeps_awkward_text_exact(pg_url):
    import pandas as pd

    ledger.migrate(pg_url)
    texts = ["\\N", "a\rb", 'say "hi", ok', "line\nbreak", "", "back\\slash", "émoji ✓"]
    frame = pd.DataFrame(
        {
            "as_of": date(2026, 11, 23),
            "source": "s",
            "source_file": "f.csv",
            "source_row": range(len(texts)),
            "field": "reference",
            "reason": "X",
            "message": "m",
            "value": texts,
            "raw": [None] * len(texts),
        }
    )
    with ledger.ledger(pg_url) as engine, engine.begin() as conn:
        ledger.bulk_insert(conn, ledger.QuarantinedRow.__table__, frame)
    with ledger.ledger(pg_url) as engine, engine.connect() as conn:
        got = conn.execute(
            sa.select(ledger.QuarantinedRow.value, ledger.QuarantinedRow.raw).order_by(
                ledger.QuarantinedRow.source_row
            )
        ).all()
    assert [g.value for g in got] == texts
    assert all(g.raw is None for g in got)


def test_migrations_give_every_model_its_table(ledger_url):
    ledger.migrate(ledger_url)
    with ledger.ledger(ledger_url) as engine:
        tables = set(sa.inspect(engine).get_table_names())
    assert set(ledger.Base.metadata.tables) <= tables


def test_one_business_date_at_a_time_and_the_lease_ends_with_the_run(ledger_engine):
    """Two dates at once gave order-dependent books: the second is refused, by name."""
    from datetime import UTC, datetime, timedelta

    from dunning.errors import DateBusy

    noon = datetime(2026, 11, 23, 12, tzinfo=UTC)
    day, other = date(2026, 11, 23), date(2026, 11, 20)
    ledger.take_lease(ledger_engine, "dunning_daily", day, "run-a", noon, hours=12)
    ledger.take_lease(ledger_engine, "dunning_daily", day, "run-b", noon, hours=12)  # same day
    with pytest.raises(DateBusy, match=r"run-b is working on 2026-11-23.*--max-active-runs 1"):
        ledger.take_lease(ledger_engine, "dunning_daily", other, "run-c", noon, hours=12)
    ledger.release_lease(ledger_engine, "dunning_daily", "run-b")
    ledger.take_lease(ledger_engine, "dunning_daily", other, "run-c", noon, hours=12)
    # a run that died without its summary holds the date only until its lease expires
    later = noon + timedelta(hours=13)
    ledger.take_lease(ledger_engine, "dunning_daily", day, "run-d", later, hours=12)
    ledger.take_lease(ledger_engine, "dunning_waves", other, "run-e", later, hours=1)  # own lease


def test_a_nul_in_a_memo_is_quarantined_and_the_day_loads(tmp_path, ledger_url):
    """PostgreSQL refuses NUL in text outright (it once failed the whole day's COPY, naming
    neither file nor row): the row is quarantined with its line and the rest loads."""
    ledger.migrate(ledger_url)
    rows = [invoice("INV-1"), invoice("INV-2", Memo="PO\x0077")]
    loaded = load_day(tmp_path, ledger_url, date(2026, 11, 23), rows)
    assert loaded["invoices"] == 1
    with ledger.ledger(ledger_url) as engine, engine.connect() as conn:
        q = conn.execute(sa.select(ledger.QuarantinedRow.__table__)).mappings().one()
    assert (q["reason"], q["field"], q["source_row"], q["value"]) == (
        "CONTROL_CHARACTER", "reference", 7, "PO\\x0077"
    )  # fmt: skip
