"""The day's KPI tables and HTML report on a ledger small enough to compute by hand.

USD book, period 30 days, report date 2026-03-31, opening snapshot 2026-03-01:

- d1 owns A (issued 03-11, 1000, due 04-10: current) and B (issued 02-19, 500, due 03-21:
  10 days late on 03-31, current on 03-01);
- d2 owns C (issued 2025-10-01, 300, due 2025-12-01: 90 days late on 03-01, 120 on 03-31);
- d3 owned D (700, 1-30 on 03-01) and paid it on 03-10; E (600, issued 03-05) was issued and
  paid within the period (AR history only).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from upath import UPath

from dunning import lake, ledger
from dunning.config import Config
from dunning.reports import daily, html, kpis

AS_OF, BEGIN = date(2026, 3, 31), date(2026, 3, 1)


def config(trend_days: int = 30) -> Config:
    return Config.model_validate(
        {
            "portfolio": {"name": "Test"},
            "sources": [{"name": "erp", "path": "x.csv", "columns": {}}],
            "reports": {"period_days": 30, "recovery_days": 14, "confidence": 0.95,
                        "trend_days": trend_days},
        }
    )  # fmt: skip


def snap(day, inv, debtor, issued, due, amount, open_):
    return dict(as_of=day, source="erp", invoice_id=inv, debtor_id=debtor, doc_type="invoice",
                issue_date=issued, due_date=due, currency="USD", amount_minor=amount,
                open_minor=open_, disputed=False, source_row=1)  # fmt: skip


def bucket(day, debtor, name, open_, overdue):
    return dict(as_of=day, debtor_id=debtor, bucket=name, currency="USD", open_minor=open_,
                overdue_minor=overdue, max_days_past_due=0)  # fmt: skip


def instalment(pid, status):
    return dict(promise_id=pid, seq=1, debtor_id="d1", kind="promise", channel="email",
                created_on=date(2026, 3, 2), currency="USD", due_on=date(2026, 3, 20),
                amount_minor=100, paid_minor=100 if status == "kept" else 0, status=status,
                evaluated_as_of=AS_OF)  # fmt: skip


@pytest.fixture
def book(ledger_engine, tmp_path):
    d = date
    rows = {
        ledger.InvoiceSnapshot: [
            snap(AS_OF, "A", "d1", d(2026, 3, 11), d(2026, 4, 10), 1000, 1000),
            snap(AS_OF, "B", "d1", d(2026, 2, 19), d(2026, 3, 21), 500, 500),
            snap(AS_OF, "C", "d2", d(2025, 10, 1), d(2025, 12, 1), 300, 300),
            snap(BEGIN, "B", "d1", d(2026, 2, 19), d(2026, 3, 21), 500, 500),
            snap(BEGIN, "C", "d2", d(2025, 10, 1), d(2025, 12, 1), 300, 300),
            snap(BEGIN, "D", "d3", d(2026, 1, 15), d(2026, 2, 14), 700, 700),
        ],
        ledger.InvoiceHistory: [
            dict(
                invoice_id="E",
                debtor_id="d3",
                doc_type="invoice",
                issue_date=d(2026, 3, 5),
                due_date=d(2026, 3, 20),
                currency="USD",
                amount_minor=600,
                open_minor=0,
                paid_date=d(2026, 3, 15),
                disputed=False,
            ),
        ],
        ledger.DebtorBucket: [
            bucket(BEGIN, "d1", "current", 500, 0),
            bucket(BEGIN, "d2", "61-90", 300, 300),
            bucket(BEGIN, "d3", "1-30", 700, 700),
            bucket(AS_OF, "d1", "1-30", 1500, 500),
            bucket(AS_OF, "d2", "91-120", 300, 300),
        ],
        ledger.Allocation: [
            dict(
                as_of=d(2026, 3, 10),
                line_id="L1",
                booked_on=d(2026, 3, 10),
                debtor_id="d3",
                source="erp",
                invoice_id="D",
                currency="USD",
                amount_minor=700,
                method="reference",
                confidence=1.0,
            ),
        ],
        ledger.Instalment: [
            instalment("p1", "kept"),
            instalment("p2", "kept"),
            instalment("p3", "broken"),
            instalment("p4", "pending"),
        ],
    }
    with ledger_engine.begin() as conn:
        for model, values in rows.items():
            conn.execute(sa.insert(model.__table__), values)
    root = UPath(tmp_path / "lake")
    segments = pd.DataFrame(
        {
            "debtor_id": ["d1", "d2", "d3"],
            "segment": ["early", "late", "late"],
            "strategy": ["standard"] * 3,
            "experiment": ["", "tone", "tone"],
            "arm": ["", "firm", "holdout"],
        }
    )
    lake.write_parquet(root / lake.partition("segments", BEGIN) / "segments.parquet", segments)
    plan = pd.DataFrame(
        {"debtor_id": ["d2", "d2"], "step_index": [1, 0], "step": ["second", "first"],
         "template": ["t2", "t1"]}
    )  # fmt: skip
    lake.write_parquet(root / lake.partition("plans", BEGIN) / "planned_contacts.parquet", plan)
    return ledger_engine, root


def test_money_kpis_match_the_hand_computation(book):
    engine, root = book
    tables = daily.kpi_tables(engine, root, config(), AS_OF)
    usd = tables["kpis"].query("currency == 'USD'").set_index("kpi")["value"]
    assert usd["ending_ar"] == 1800 and usd["current_ar"] == 1000 and usd["overdue_ar"] == 800
    assert usd["credit_sales"] == 1600  # A (open) + E (closed); B was issued before the period
    assert usd["collected"] == 700
    assert usd["dso"] == pytest.approx(1800 / 1600 * 30)  # 33.75
    assert usd["best_possible_dso"] == pytest.approx(1000 / 1600 * 30)  # 18.75
    assert usd["average_days_delinquent"] == pytest.approx(15)
    assert usd["add_weighted"] == pytest.approx((10 * 500 + 120 * 300) / 800)  # 51.25
    # countback: this period's 1600 is covered (30 days), the 200 left covers 200 of the
    # previous period's 500 (B): 30 * 200 / 500 = 12 days
    assert usd["countback_dso"] == pytest.approx(42)
    # CEI: (begin 1500 + sales 1600 - end 1800) / (1500 + 1600 - current 1000)
    assert usd["cei"] == pytest.approx(1300 / 2100 * 100)
    assert usd["at_risk_share"] == pytest.approx(300 / 1800)  # only C is over 90 days
    rest = tables["kpis"].query("currency == 'ALL'").set_index("kpi")["value"]
    assert rest["cure_rate"] == pytest.approx(0.5)  # d3 paid, d2 still late
    assert rest["promise_kept_rate"] == pytest.approx(2 / 3)  # the pending one is no fact yet
    assert (tables["kpis"]["begin_snapshot"] == BEGIN).all()


def test_aging_and_roll_rates(book):
    engine, root = book
    tables = daily.kpi_tables(engine, root, config(), AS_OF)
    aging = tables["aging"].query("as_of == @AS_OF").set_index("bucket")["open_minor"]
    assert aging.to_dict() == {"current": 1000, "1-30": 500, "91-120": 300}
    rolls = tables["roll_rates"].set_index(["from_bucket", "to_bucket"])["share"]
    assert rolls[("current", "1-30")] == 1.0  # d1's 500 rolled forward
    assert rolls[("61-90", "91-120")] == 1.0
    assert rolls[("1-30", "paid")] == 1.0  # d3 paid in full
    assert np.isnan(rolls[("120+", "paid")])  # nobody was in 120+: cannot say, not 0


def test_recovery_follows_the_cohort_by_segment_wave_and_arm(book):
    engine, root = book
    tables = daily.kpi_tables(engine, root, config(), AS_OF)
    rec = tables["recovery"].set_index(["dimension", "value"])
    # the cohort is 03-01 (the ledger has nothing nearer 03-17); d1 owed nothing overdue then
    assert (tables["recovery"]["cohort_date"] == BEGIN).all()
    late = rec.loc[("segment", "late")]
    assert (late["debtors"], late["overdue_minor"], late["collected_minor"]) == (2, 1000, 700)
    assert late["recovery_rate"] == pytest.approx(0.7) and late["payer_share"] == 0.5
    assert rec.loc[("step", "first"), "collected_minor"] == 0  # d2's first planned step
    assert rec.loc[("step", "none"), "collected_minor"] == 700  # the holdout was not contacted
    assert rec.loc[("arm", "holdout"), "recovery_rate"] == 1.0
    uplift = tables["uplift"].iloc[0]
    assert (uplift["arm"], uplift["uplift"]) == ("firm", -1.0)
    assert np.isnan(uplift["ci_low"])  # one debtor a side: no interval
    curve = tables["recovery_curve"].set_index(["group", "day"])["recovery_rate"]
    assert curve[("holdout", 8)] == 0 and curve[("holdout", 9)] == 1.0 and curve[("firm", 30)] == 0


def test_uplift_interval_by_hand():
    treated = pd.Series([0.0, 1.0, 1.0, 0.0])  # mean 0.5, variance 1/3
    control = pd.Series([0.0, 0.0, 1.0])  # mean 1/3, variance 1/3
    out = kpis.uplift(treated, control, confidence=0.95)
    se = np.sqrt((1 / 3) / 4 + (1 / 3) / 3)
    assert out["uplift"] == pytest.approx(1 / 6)
    assert out["ci_low"] == pytest.approx(1 / 6 - 1.959964 * se, abs=1e-6)
    assert out["ci_high"] == pytest.approx(1 / 6 + 1.959964 * se, abs=1e-6)
    assert (out["debtors"], out["holdout_debtors"]) == (4, 3)


def test_report_is_published_with_every_plot_and_indexed_by_run(book):
    engine, root = book
    summary = {"as_of": AS_OF.isoformat(), "run_id": "scheduled__2026-03-31T10:00:00+00:00",
               "status": "complete", "messages_sent": {"email": 3}}  # fmt: skip
    out = daily.report_to_lake(engine, root, config(), summary)
    page = (root / out["report"]).read_text()
    for plot in html.PLOTS:
        assert f'id="plot-{plot}"' in page and "data:image/png;base64," in page
    assert "$18.00" in page  # open AR, formatted in the currency
    assert "<script" not in page and "http" not in page.split("</style>")[1]
    for name in ("kpis", "aging", "roll_rates", "recovery", "uplift", "liquidation"):
        assert (root / out["tables"] / f"{name}.parquet").exists()
        assert (root / out["tables"] / f"{name}.csv").exists()
    index = lake.read_json(root / daily.run_index_key(summary["run_id"]))
    assert index == {"as_of": "2026-03-31", "report": daily.run_report_key(summary["run_id"])}
    # a later run of the date replaces the date's report, not this run's own copy
    later = {**summary, "run_id": "manual__2026-03-31T18:00:00+00:00", "status": "failed"}
    daily.report_to_lake(engine, root, config(), later)
    assert (root / index["report"]).read_text() == page
    assert "status-other" in (root / out["report"]).read_text()


def test_a_first_day_report_says_what_it_waits_for(ledger_engine, tmp_path):
    root = UPath(tmp_path / "lake")
    summary = {"as_of": AS_OF.isoformat(), "run_id": None, "status": "stopped"}
    out = daily.report_to_lake(ledger_engine, root, config(), summary)
    page = (root / out["report"]).read_text()
    assert "status-other" in page and "stopped" in page
    assert all(n == 0 for k, n in out["rows"].items() if k != "kpis")


def test_earlier_aging_bars_come_from_their_own_reports(book):
    """A report reads one snapshot: earlier days' bars are those days' reports' own rows."""
    engine, root = book
    cfg = config(trend_days=31)  # 03-01 .. 03-31
    fresh = daily.kpi_tables(engine, root, cfg, AS_OF)["aging"]
    assert set(fresh["as_of"]) == {BEGIN, AS_OF}  # no earlier report: scanned
    stored = fresh[fresh["as_of"] == BEGIN].assign(open_minor=12345)
    lake.write_parquet(root / lake.partition("reports", BEGIN) / "kpis/aging.parquet", stored)
    again = daily.kpi_tables(engine, root, cfg, AS_OF)["aging"]
    assert (again.loc[again["as_of"] == BEGIN, "open_minor"] == 12345).all()
    pd.testing.assert_frame_equal(
        again[again["as_of"] == AS_OF].reset_index(drop=True),
        fresh[fresh["as_of"] == AS_OF].reset_index(drop=True),
    )


def test_a_cohort_nobody_paid_has_flat_curves(book):
    """No money since the cohort day (an empty, untyped SQL result): zero, not an error."""
    engine, root = book
    with engine.begin() as conn:
        conn.execute(sa.delete(ledger.Allocation.__table__))
    tables = daily.kpi_tables(engine, root, config(), AS_OF)
    assert (tables["recovery_curve"]["recovery_rate"] == 0).all()
    assert (tables["recovery"]["collected_minor"] == 0).all()
