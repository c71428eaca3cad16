"""Aging and the debtor view: the numbers a collector sees before anyone is contacted."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from dunning import lake, ledger
from dunning.config import Aging, load_config
from dunning.generate import generate
from dunning.quality import validate_to_lake
from dunning.segmentation import (
    BUCKET_COLUMNS,
    VIEW_COLUMNS,
    age_invoices,
    aging_to_lake,
    bucket_history,
    debtor_view,
)
from dunning.sources import extract_to_lake

AS_OF = date(2026, 11, 23)
AGING = Aging()


def item(
    debtor: str,
    days: int,
    open_minor: int,
    *,
    doc_type: str = "invoice",
    disputed: bool = False,
    currency: str = "USD",
) -> dict:
    """An open item ``days`` past due on AS_OF (negative: due in the future)."""
    due = AS_OF - timedelta(days=days)
    return {
        "source": "erp_us",
        "source_file": "erp.csv",
        "source_row": 0,
        "invoice_id": f"{debtor}-{days}-{open_minor}",
        "debtor_id": debtor,
        "doc_type": doc_type,
        "currency": currency,
        "issue_date": due - timedelta(days=30),
        "due_date": due,
        "amount_minor": open_minor,
        "open_minor": open_minor,
        "disputed": disputed,
        "reference": "",
        "customer_name": debtor,
    }


def frame(rows: list[dict]) -> pd.DataFrame:
    """The clean invoice frame as validate writes it."""
    out = pd.DataFrame(rows)
    for col in ("issue_date", "due_date"):
        out[col] = pd.to_datetime(out[col]).astype("datetime64[s]")
    for col in ("amount_minor", "open_minor"):
        out[col] = out[col].astype("Int64")
    return out


def debtor(debtor_id: str, **kw: str) -> dict:
    row = {
        "debtor_id": debtor_id,
        "name": debtor_id,
        "kind": "consumer",
        "country": "US",
        "region": "MA",
        "city": "Boston",
        "timezones": "America/New_York",
        "locale": "en",
    }
    return row | kw


def view_of(rows: list[dict], debtors: list[dict] | None = None) -> pd.DataFrame:
    aged = age_invoices(frame(rows), AS_OF, AGING)
    known = pd.DataFrame(debtors if debtors is not None else [debtor("A")])
    return debtor_view(aged, known, AS_OF, AGING).set_index("debtor_id", drop=False)


# --- buckets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "bucket"),
    [
        (-10, "current"),
        (0, "current"),
        (1, "1-30"),
        (30, "1-30"),
        (31, "31-60"),
        (60, "31-60"),
        (61, "61-90"),
        (90, "61-90"),
        (91, "91-120"),
        (120, "91-120"),
        (121, "120+"),
        (2000, "120+"),
    ],
)
def test_bucket_edges(days, bucket):
    aged = age_invoices(frame([item("A", days, 100)]), AS_OF, AGING)
    assert aged["days_past_due"].tolist() == [days]
    assert aged["bucket"].tolist() == [bucket]


def test_custom_bounds_and_frame_kept():
    aging = Aging(buckets=[0, 7, 14])
    assert aging.labels() == ["current", "1-7", "8-14", "14+"]
    rows = frame([item("A", d, 100) for d in (0, 1, 7, 8, 14, 15)])
    aged = age_invoices(rows, AS_OF, aging)
    assert aged["bucket"].tolist() == ["current", "1-7", "1-7", "8-14", "8-14", "14+"]
    assert aged["days_past_due"].dtype == "int64"
    assert list(aged.columns) == [*rows.columns, "days_past_due", "bucket"]
    assert "bucket" not in rows  # the input is not modified


def test_due_dates_of_any_unit_after_a_parquet_round_trip():
    rows = frame([item("A", 45, 100)])
    rows["due_date"] = rows["due_date"].astype("datetime64[ms]")
    assert age_invoices(rows, AS_OF, AGING)["days_past_due"].tolist() == [45]


# --- debtor view ---------------------------------------------------------------------------------


def test_credit_notes_and_disputes_in_the_view():
    view = view_of(
        [
            item("A", 40, 10_000),
            item("A", 10, 5_000),
            item("A", 100, 3_000, disputed=True),  # oldest, but out of the chase
            item("A", -5, 2_000),  # not yet due
            item("A", 200, -4_000, doc_type="credit_note"),
            item("A", 15, 0),  # paid: not an open item
        ]
    )
    a = view.loc["A"]
    assert a["open_minor"] == 10_000 + 5_000 + 3_000 + 2_000 - 4_000
    assert a["overdue_minor"] == 10_000 + 5_000 - 4_000  # the credit is set off
    assert a["disputed_minor"] == 3_000
    assert (a["invoice_count"], a["overdue_count"]) == (4, 2)
    assert a["max_days_past_due"] == a["days_to_oldest_due"] == 40
    assert a["oldest_due_date"] == pd.Timestamp(AS_OF - timedelta(days=40))
    assert a["weighted_days_past_due"] == pytest.approx((10_000 * 40 + 5_000 * 10) / 15_000)
    assert a["bucket"] == "31-60"


def test_credit_larger_than_overdue_never_makes_overdue_negative():
    b = view_of([item("A", 5, 1_000), item("A", 3, -3_000, doc_type="credit_note")]).loc["A"]
    assert b["open_minor"] == -2_000
    assert b["overdue_minor"] == 0
    assert b["overdue_count"] == 1  # the invoice is still past due, only covered


def test_pre_due_debtor_has_negative_days():
    a = view_of([item("A", -5, 1_000), item("A", -12, 2_000)]).loc["A"]
    assert a["max_days_past_due"] == a["days_to_oldest_due"] == -5
    assert a["oldest_due_date"] == pd.Timestamp(AS_OF + timedelta(days=5))
    assert (a["overdue_minor"], a["overdue_count"], a["weighted_days_past_due"]) == (0, 0, 0.0)
    assert a["bucket"] == "current"


def test_nothing_to_chase_keeps_non_null_features():
    view = view_of(
        [item("A", 80, 7_000, disputed=True), item("B", 30, -500, doc_type="credit_note")],
        [debtor("A"), debtor("B")],
    )
    assert view["oldest_due_date"].isna().all()
    assert view["max_days_past_due"].tolist() == [0, 0]
    assert view["bucket"].tolist() == ["current", "current"]
    assert view["disputed_minor"].tolist() == [7_000, 0]
    assert view["overdue_minor"].tolist() == [0, 0]


def test_multi_currency_debtor_is_one_row_in_its_main_currency():
    view = view_of(
        [
            item("A", 10, 6_000),
            item("A", 20, 4_000),
            item("A", 90, 3_000, currency="EUR"),
            item("A", 95, -100, currency="EUR", doc_type="credit_note"),
            item("B", 5, 500),
        ],
        [debtor("A"), debtor("B")],
    )
    a = view.loc["A"]
    assert (a["currency"], a["open_minor"], a["other_currency_items"]) == ("USD", 10_000, 2)
    assert (a["invoice_count"], a["max_days_past_due"]) == (2, 20)  # EUR items are not in it
    assert view.loc["B", "other_currency_items"] == 0


def test_weighted_days_hand_computed():
    a = view_of([item("A", 10, 100), item("A", 50, 300), item("A", 100, 600)]).loc["A"]
    assert a["weighted_days_past_due"] == pytest.approx((10 * 100 + 50 * 300 + 100 * 600) / 1000)
    assert a["weighted_days_past_due"] == pytest.approx(76.0)


def test_one_row_per_debtor_with_attributes_joined():
    view = view_of(
        [item("B", 3, 100), item("A", 1, 100), item("B", 70, 200), item("C", 9, 0)],
        [
            debtor("A", country="FR", locale="fr", timezones="Europe/Paris", kind="commercial"),
            debtor("A", country="DE"),  # a second debtor source repeating A: first row wins
            debtor("B", region=""),
        ],
    )
    assert list(view.columns) == list(VIEW_COLUMNS)
    assert view["debtor_id"].tolist() == ["A", "B"]  # C has nothing open
    a = view.loc["A"]
    assert (a["kind"], a["country"], a["locale"], a["timezones"]) == (
        "commercial",
        "FR",
        "fr",
        "Europe/Paris",
    )
    assert view.loc["B", "invoice_count"] == 2


def test_debtor_missing_from_master_keeps_na_attributes():
    view = view_of([item("A", 3, 100), item("Z", 3, 100)], [debtor("A")])
    assert view.loc["A", "country"] == "US"
    assert view.loc["Z", ["kind", "country", "region", "locale", "timezones"]].isna().all()
    no_master = view_of([item("A", 3, 100)], [])
    assert no_master.loc["A", ["kind", "timezones"]].isna().all()


def test_no_open_items_gives_an_empty_view_with_the_columns():
    view = view_of([item("A", 3, 0)])
    assert view.empty
    assert list(view.columns) == list(VIEW_COLUMNS)
    assert bucket_history(view, AS_OF).empty


# --- bucket history in the ledger ----------------------------------------------------------------


@pytest.fixture
def migrated_url(ledger_url):
    ledger.migrate(ledger_url)
    return ledger_url


def saved(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        query = sa.select(ledger.DebtorBucket.__table__).order_by("as_of", "debtor_id")
        return [tuple(r) for r in conn.execute(query)]


def test_save_debtor_buckets_replaces_the_day(migrated_url):
    view = view_of([item("A", 40, 1_000), item("B", -3, 200)], [debtor("A"), debtor("B")])
    day1, day2 = AS_OF - timedelta(days=1), AS_OF
    with ledger.ledger(migrated_url) as engine:
        assert ledger.save_debtor_buckets(engine, day1, bucket_history(view, day1)) == 2
        assert ledger.save_debtor_buckets(engine, day2, bucket_history(view, day2)) == 2
        first = saved(engine)
        assert ledger.save_debtor_buckets(engine, day2, bucket_history(view, day2)) == 2
        assert saved(engine) == first  # same rows, not doubled
        paid = view[view["debtor_id"] == "A"]  # B paid up: day 2 re-run drops B
        assert ledger.save_debtor_buckets(engine, day2, bucket_history(paid, day2)) == 1
        rows = saved(engine)
    assert first == [
        (day1, "A", "31-60", "USD", 1_000, 1_000, 40),
        (day1, "B", "current", "USD", 200, 0, -3),
        (day2, "A", "31-60", "USD", 1_000, 1_000, 40),
        (day2, "B", "current", "USD", 200, 0, -3),
    ]
    assert rows == first[:3]


def test_save_debtor_buckets_refuses_rows_of_another_day(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledger.migrate(url)
    view = view_of([item("A", 40, 1_000)])
    with ledger.ledger(url) as engine, pytest.raises(ValueError, match="another as_of"):
        ledger.save_debtor_buckets(engine, AS_OF, bucket_history(view, date(2026, 1, 1)))


# --- the DAG stage -------------------------------------------------------------------------------


def test_aging_to_lake_end_to_end(tmp_path):
    generate(tmp_path / "portfolio", debtors=150, as_of=AS_OF, seed=3)
    cfg = load_config(tmp_path / "portfolio" / "config.yaml")
    root = lake.root((tmp_path / "lake").as_uri())
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledger.migrate(url)
    extracts = [extract_to_lake(cfg, s.name, AS_OF, root) for s in cfg.sources]
    validated = validate_to_lake(cfg, AS_OF, root, extracts, {})
    with ledger.ledger(url) as engine:
        result = aging_to_lake(cfg, AS_OF, root, validated, engine)
        again = aging_to_lake(cfg, AS_OF, root, validated, engine)
        history = pd.read_sql(sa.select(ledger.DebtorBucket.__table__), engine)

    assert again == result
    assert result["debtor_view"] == "segments/as_of=2026-11-23/debtor_view.parquet"
    assert list(result["by_bucket"]) == cfg.aging.labels()
    assert sum(result["by_bucket"].values()) == result["debtors"] > 0
    view = lake.read_parquet(root / result["debtor_view"])
    assert list(view.columns) == list(VIEW_COLUMNS)
    assert view["debtor_id"].is_unique and len(view) == result["debtors"]
    assert len(history) == len(view)  # re-run replaced the day
    assert list(history.columns) == list(BUCKET_COLUMNS)

    # The view agrees with a plain per-debtor computation over the clean snapshot.
    stats = lake.read_json(root / validated["stats"])["sources"]
    frames = [lake.read_parquet(root / k) for k in validated["snapshots"].values()]
    kinds = [stats[n]["dataset"] for n in validated["snapshots"]]
    invoices = pd.concat([f for f, k in zip(frames, kinds, strict=True) if k == "invoices"])
    open_items = invoices[invoices["open_minor"] != 0]
    assert set(view["debtor_id"]) == set(open_items["debtor_id"])
    single = view[view["other_currency_items"] == 0].set_index("debtor_id")
    expected = open_items.groupby("debtor_id")["open_minor"].sum()
    assert (single["open_minor"] == expected[single.index]).all()
    chase = open_items[(open_items["doc_type"] == "invoice") & ~open_items["disputed"]]
    chase = chase[chase["open_minor"] > 0]
    oldest = chase.groupby("debtor_id")["due_date"].min()
    has = single.index.intersection(oldest.index)
    assert (single.loc[has, "oldest_due_date"] == oldest[has]).all()
    assert view["kind"].notna().all()  # every generated debtor is in the master
