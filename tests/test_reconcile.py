"""Reconciliation end to end on hand-written statements in every format (tests/data/payments).

The story, over two business days (the AR snapshot lags a day, as ``ar_cash_lag_days`` says):

* 2026-11-21 (camt.053 .02): Golf Partners pays INV-0007001.
* 2026-11-22: Acme pays two invoices in one transfer, reported by camt.053 *and* MT940; Bright
  Foods pays 120 EUR less a 20 EUR credit note, and 540 USD for a 500 EUR invoice by card;
  Echo overpays; Fjord keys its invoice number with two digits swapped; Delta pays part (BAI2);
  an unknown payer sends exactly one open invoice's amount; another sends a donation; Golf's
  payment comes back (returned, camt reversal); Cedar pays by card and is refunded the same
  day; two card charges are declined (insufficient funds, stolen card); one processor line has
  an impossible date.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from dunning import ledger
from dunning.config import load_config
from dunning.reconcile import open_after_payments, reconcile_to_lake
from tests.factories import ledger_debtor

DATA = Path(__file__).parent / "data" / "payments"
DAY1, DAY2 = date(2026, 11, 21), date(2026, 11, 22)

DEBTORS = {
    "D1": ("Acme Trading Ltd", "USD"),
    "D2": ("Bright Foods SARL", "EUR"),
    "D3": ("Cedar Homes Inc", "USD"),
    "D4": ("Delta Corp", "USD"),
    "D5": ("Echo Retail LLC", "USD"),
    "D6": ("Fjord AS", "USD"),
    "D7": ("Golf Partners", "USD"),
}
# invoice, debtor, doc_type, due, amount (minor)
INVOICES = [
    ("INV-0001001", "D1", "invoice", "2026-10-10", 10000),
    ("INV-0001002", "D1", "invoice", "2026-11-01", 25000),
    ("INV-0001003", "D1", "invoice", "2026-11-18", 8000),
    ("INV-0002001", "D2", "invoice", "2026-10-20", 50000),
    ("INV-0002002", "D2", "invoice", "2026-11-05", 12000),
    ("CN-0002003", "D2", "credit_note", "2026-11-05", -2000),
    ("INV-0003001", "D3", "invoice", "2026-11-01", 30000),
    ("INV-0003002", "D3", "invoice", "2026-11-10", 30000),
    ("INV-0004001", "D4", "invoice", "2026-10-01", 100000),
    ("INV-0005001", "D5", "invoice", "2026-11-01", 7550),
    ("INV-0006001", "D6", "invoice", "2026-11-02", 20000),
    ("INV-0007001", "D7", "invoice", "2026-11-01", 6000),
]


def _snapshot(as_of: date) -> pd.DataFrame:
    rows = []
    for i, (inv, debtor, doc, due, amount) in enumerate(INVOICES, start=2):
        rows.append(
            {
                "as_of": as_of,
                "source": "erp",
                "invoice_id": inv,
                "debtor_id": debtor,
                "doc_type": doc,
                "issue_date": date(2026, 9, 1),
                "due_date": date.fromisoformat(due),
                "currency": DEBTORS[debtor][1],
                "amount_minor": amount,
                "open_minor": amount,
                "disputed": False,
                "reference": None,
                "source_row": i,
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture
def book(ledger_engine: sa.Engine, tmp_path: Path):
    """A ledger with the debtors and both days' snapshots, and a config reading the feeds."""
    feeds = tmp_path / "feeds"
    shutil.copytree(DATA, feeds)
    debtors = pd.DataFrame(
        [ledger_debtor(d, DAY1, name=name) for d, (name, _) in DEBTORS.items()]
    ).assign(country=lambda f: f["debtor_id"].map({"D2": "FR"}).fillna("US"))
    with ledger_engine.begin() as conn:
        ledger.bulk_insert(conn, ledger.Debtor.__table__, debtors)
        for day in (DAY1, DAY2):
            ledger.bulk_insert(conn, ledger.InvoiceSnapshot.__table__, _snapshot(day))
    cfg = {
        "portfolio": {"name": "Test Co"},
        "sources": [{"name": "erp", "path": "erp.csv", "columns": {"invoice_id": "Num"}}],
        "payments": {
            "feeds": [
                {"name": "bank_camt", "format": "camt053", "path": "feeds/camt053_*.xml"},
                {"name": "bank_mt940", "format": "mt940", "path": "feeds/*.sta"},
                {"name": "bank_bai2", "format": "bai2", "path": "feeds/*.bai"},
                {"name": "cards", "format": "processor_csv", "path": "feeds/processor_*.csv"},
            ],
            "rates": "feeds/rates.csv",
            "promises": "promises.csv",
        },
    }
    (tmp_path / "promises.csv").write_text(
        "promise_id,debtor_id,kind,created_on,currency,due_on,amount,seq,channel\n"
        "P1,D4,promise,2026-11-15,USD,2026-11-21,400.00,1,phone\n"
        "P2,D3,plan,2026-11-01,USD,2026-11-10,300.00,1,portal\n"
        "P2,D3,plan,2026-11-01,USD,2026-12-10,300.00,2,portal\n"
        "P3,D6,promise,2026-11-20,USD,2026-12-01,200.00,1,email\n"
        "P4,D9,promise,2026-11-20,USD,not a date,5.00,1,email\n",
        encoding="utf-8",
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return load_config(path), ledger_engine, tmp_path / "lake"


def _run(book, day: date) -> dict:
    cfg, engine, root = book
    root.mkdir(exist_ok=True)
    from upath import UPath

    return reconcile_to_lake(cfg, day, UPath(root), engine)


def _table(engine: sa.Engine, model, **where) -> pd.DataFrame:
    query = sa.select(model)
    for column, value in where.items():
        query = query.where(getattr(model, column) == value)
    with engine.connect() as conn:
        return pd.read_sql(query, conn)


def _open(engine: sa.Engine, day: date) -> dict[str, int]:
    inv = ledger.InvoiceSnapshot.__table__.c
    with engine.connect() as conn:
        items = pd.read_sql(sa.select(inv).where(inv.as_of == day), conn)
        out = open_after_payments(conn, day, 1, items)
    return dict(zip(out["invoice_id"], out["open_minor"].astype(int), strict=True))


def test_two_days_of_feeds(book) -> None:
    _, engine, root = book
    first = _run(book, DAY1)
    assert first["payments_matched"] == 1 and first["payments_unmatched"] == 0
    assert _open(engine, DAY1)["INV-0007001"] == 0  # Golf paid: nothing to chase on day 1

    r = _run(book, DAY2)
    lines = _table(engine, ledger.PaymentLine, as_of=DAY2).set_index("line_id")
    by_ref = lines.reset_index().set_index(["feed", "source_row"])
    allocs = _table(engine, ledger.Allocation, as_of=DAY2)
    paid = allocs.groupby("invoice_id")["amount_minor"].sum().to_dict()
    opened = _open(engine, DAY2)

    # Multi-invoice payment: both invoices closed, matched by reference with certainty.
    assert paid["INV-0001001"] == 10000 and paid["INV-0001002"] == 25000
    assert opened["INV-0001001"] == 0 and opened["INV-0001002"] == 0
    assert opened["INV-0001003"] == 8000
    acme = lines[lines["payer_name"] == "ACME TRADING LTD"]
    assert set(acme["status"]) == {"applied", "duplicate"}  # same money in camt and MT940
    assert acme.loc[acme["status"] == "applied", "feed"].item() == "bank_camt"
    assert acme.loc[acme["status"] == "applied", "method"].item() == "reference"
    # Credit note netted: 120 EUR - 20 EUR paid as 100 EUR.
    assert paid["INV-0002002"] == 12000 and paid["CN-0002003"] == -2000
    # Another currency: 540 USD at 1.08 pays the 500 EUR invoice.
    assert paid["INV-0002001"] == 50000
    assert allocs.loc[allocs["invoice_id"] == "INV-0002001", "method"].item() == "debtor_amount"
    # Overpayment: 75.50 applied, 24.50 on account, in front of a person.
    assert paid["INV-0005001"] == 7550
    credit = allocs[(allocs["debtor_id"] == "D5") & allocs["invoice_id"].isna()]
    assert credit["amount_minor"].sum() == 2450
    # Typo in the reference (INV-0006010 for INV-0006001).
    assert paid["INV-0006001"] == 20000
    assert allocs.loc[allocs["invoice_id"] == "INV-0006001", "method"].item() == "reference_typo"
    # Partial payment: the rest stays open and is chased.
    assert opened["INV-0004001"] == 60000
    # The returned payment reopens what it paid; the refunded card payment too.
    assert opened["INV-0007001"] == 6000
    assert paid["INV-0003001"] == 0 and opened["INV-0003001"] == 30000
    # An unknown payer with one invoice's exact amount is proposed, not applied.
    exceptions = _table(engine, ledger.PaymentException, as_of=DAY2).set_index("line_id")
    low = by_ref.loc[("bank_bai2", 5)]
    assert exceptions.loc[low["line_id"], "reason"] == "LOW_CONFIDENCE"
    assert "INV-0001003" in json.loads(exceptions.loc[low["line_id"], "detail"])["invoices"]
    assert low["status"] == "exception"
    reasons = exceptions["reason"].value_counts().to_dict()
    assert reasons == {
        "UNMATCHED": 1,
        "LOW_CONFIDENCE": 1,
        "DUPLICATE": 1,
        "OVERPAYMENT": 1,
    }
    assert r["payments_matched"] == 7 and r["payments_unmatched"] == 2
    assert r["duplicates"] == 1 and r["reversals"] == 2
    # Fees are not customer money: kept, ignored.
    assert lines.loc[lines["reference"] == "ACCOUNT FEE", "status"].item() == "ignored"
    # The impossible date is quarantined with file, line and field.
    q = pd.read_parquet(root / r["quarantine"])
    bad = q[q["source_file"] == "processor_2026-11-22.csv"]
    assert bad[["source_row", "field", "reason"]].values.tolist() == [
        ["7", "booked_on", "BAD_DATE"]
    ]
    # Raw lines are kept for audit.
    assert (
        "<Ntry"
        in by_ref.loc[("bank_camt", lines[lines["feed"] == "bank_camt"]["source_row"].min()), "raw"]
    )


def test_declines_become_retry_instructions(book) -> None:
    root = book[2]
    r = _run(book, DAY2)
    retries = pd.read_csv(root / r["retries"], dtype=str).set_index("charge_ref")
    soft = retries.loc["INV-0003002"]
    assert (soft["category"], soft["action"], soft["retry_on"]) == ("soft", "retry", "2026-11-25")
    hard = retries.loc["INV-0004001"]
    assert (hard["category"], hard["action"]) == ("hard", "request_new_method")
    assert pd.isna(hard["retry_on"])
    assert r["retries_by_action"] == {"retry": 1, "request_new_method": 1}


def test_promises_kept_broken_and_current(book) -> None:
    _, engine, root = book
    _run(book, DAY1)
    r = _run(book, DAY2)
    inst = _table(engine, ledger.Instalment).set_index(["promise_id", "seq"])
    # Delta promised 400 by 2026-11-21 (+2 days grace) and paid 400 on 2026-11-22: kept.
    assert inst.loc[("P1", 1), "status"] == "kept"
    # Cedar's plan: 300 due 2026-11-10, nothing came (the card payment was refunded): broken.
    assert inst.loc[("P2", 1), "status"] == "broken"
    assert inst.loc[("P2", 2), "status"] == "pending"
    # Fjord promised 200 by 2026-12-01 and paid today: kept early.
    assert inst.loc[("P3", 1), "status"] == "kept"
    flags = pd.read_parquet(root / r["flags"]).set_index("debtor_id")
    assert not flags.loc["D3", "plan_current"]
    assert pd.Timestamp(flags.loc["D3", "promise_broken_on"]) == pd.Timestamp("2026-11-13")
    assert r["quarantined"] >= 2  # the bad date line and the bad promise row


def test_rerun_replaces_its_own_rows(book) -> None:
    _, engine, _ = book
    first = _run(book, DAY2)  # day 1's file is read too: nothing reconciled it yet
    counts = {
        m.__tablename__: len(_table(engine, m)) for m in (ledger.PaymentLine, ledger.Allocation)
    }
    again = _run(book, DAY2)
    assert {
        m.__tablename__: len(_table(engine, m)) for m in (ledger.PaymentLine, ledger.Allocation)
    } == counts
    assert again["payments_matched"] == first["payments_matched"] == 8


def test_a_day_without_payments_and_undo_lines_that_take_too_much(book) -> None:
    """A day with only declines and refunds runs; two refunds never take back more than the
    payment; a failed refund takes nothing; a negative charge is quarantined, not flipped."""
    _, engine, root = book
    _run(book, DAY2)
    day3 = date(2026, 11, 23)
    (root.parent / "feeds" / "processor_2026-11-23.csv").write_text(
        "id,type,status,created,amount,currency,customer,description,source_id,decline_code,network\n"
        "re_a,refund,succeeded,2026-11-23T09:00:00Z,400.00,usd,D2,refund,ch_2001,,\n"
        "re_b,refund,succeeded,2026-11-23T10:00:00Z,400.00,usd,D2,refund,ch_2001,,\n"
        "re_c,refund,failed,2026-11-23T11:00:00Z,100.00,usd,D1,refund,ch_3001,,\n"
        "ch_n,charge,succeeded,2026-11-23T12:00:00Z,-50.00,usd,D1,oops,,,\n"
        "ch_d,charge,failed,2026-11-23T13:00:00Z,20.00,usd,D5,card,,do_not_honor,visa\n",
        encoding="utf-8",
    )
    r = _run(book, day3)
    assert r["payments_matched"] == 0 and r["declines"] == 1
    taken = _table(engine, ledger.Allocation, as_of=day3)
    assert taken.groupby("invoice_id")["amount_minor"].sum().to_dict() == {"INV-0002001": -50000}
    lines = _table(engine, ledger.PaymentLine, as_of=day3).set_index("external_id")
    assert lines.loc["re_c", "status"] == "ignored"
    q = pd.read_parquet(root / r["quarantine"])
    assert q.loc[q["source_row"].astype(int) == 5, "reason"].tolist() == ["NEGATIVE_AMOUNT"]


@pytest.mark.clock
def test_a_backfill_never_instructs_the_processor(book) -> None:
    """Retry instructions of a backfill or dry run are a preview: no card is charged for a
    past date."""
    cfg, engine, root = book
    root.mkdir(exist_ok=True)
    from upath import UPath

    r = reconcile_to_lake(cfg, DAY2, UPath(root), engine, instruct=False)
    assert r["retries"].endswith("retry_instructions.preview.csv")
    assert (root / r["retries"]).exists()
    assert not list(root.rglob("retry_instructions.csv"))
