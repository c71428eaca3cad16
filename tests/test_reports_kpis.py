"""KPI formulas against hand-computed examples."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dunning.reports import kpis

BUCKETS = ["current", "1-30", "31-60"]


def test_dso_best_possible_and_average_days_delinquent():
    # 500k open of 1M sold in a 90-day quarter; 300k of it not due yet
    assert kpis.dso(500_000, 1_000_000, 90) == pytest.approx(45)
    assert kpis.best_possible_dso(300_000, 1_000_000, 90) == pytest.approx(27)
    assert kpis.average_days_delinquent(500_000, 300_000, 1_000_000, 90) == pytest.approx(18)
    assert math.isnan(kpis.dso(10, 0, 30))  # no sales: cannot say, not 0


def test_countback_dso_walks_back_through_monthly_sales():
    # AR 250 covers last month (30 d, 100), the one before (31 d, 100) and 50 of 200 before that
    assert kpis.countback_dso(250, [(30, 100), (31, 100), (30, 200)]) == pytest.approx(68.5)
    assert kpis.countback_dso(0, [(30, 100)]) == 0
    assert kpis.countback_dso(500, [(30, 100)]) == pytest.approx(30)  # history too short


def test_cei_spreads_sales_over_the_months_of_the_period():
    # (100 + 300/3 - 120) / (100 + 300/3 - 80) = 80 / 120
    assert kpis.cei(100, 300, 120, 80, months=3) == pytest.approx(66.6667, abs=1e-3)
    assert math.isnan(kpis.cei(0, 0, 0, 0))  # nothing to collect: cannot say


def frame(*rows: tuple[str, str, int]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["debtor_id", "bucket", "open_minor"])


def test_roll_rates_and_cure_rate_between_two_dates():
    before = frame(("D1", "current", 100), ("D2", "1-30", 200), ("D3", "1-30", 100),
                   ("D4", "31-60", 50))  # fmt: skip
    after = frame(("D1", "1-30", 100), ("D2", "31-60", 150), ("D4", "31-60", 0))
    rates = kpis.roll_rates(before, after, BUCKETS)
    assert rates.loc["current", "1-30"] == pytest.approx(1.0)
    assert rates.loc["1-30", "31-60"] == pytest.approx(2 / 3)  # D2's 200 of 300, by balance
    assert rates.loc["1-30", "paid"] == pytest.approx(1 / 3)  # D3 is gone
    assert rates.loc["31-60", "paid"] == pytest.approx(1.0)  # D4 has nothing open
    assert rates.loc["1-30"].sum() == pytest.approx(1.0)
    # late before: D2, D3, D4; cured: D3 (gone) and D4 (nothing open)
    assert kpis.cure_rate(before, after) == pytest.approx(2 / 3)


def test_promise_kept_rate_counts_decided_instalments_only():
    rows = pd.DataFrame({"status": ["kept", "kept", "broken", "pending", "kept"]})
    assert kpis.promise_kept_rate(rows) == pytest.approx(3 / 4)


def test_liquidation_by_placement_vintage():
    placements = pd.DataFrame(
        {
            "account_ref": ["A", "B", "C"],
            "placed_on": pd.to_datetime(["2026-09-03", "2026-09-20", "2026-10-01"]),
            "balance_minor": [1000, 3000, 500],
        }
    )
    payments = pd.DataFrame({"account_ref": ["A", "B", "B", "C"],
                             "amount_minor": [500, 700, -200, 0]})  # fmt: skip
    out = kpis.liquidation_by_vintage(placements, payments).set_index("vintage")
    assert out.loc["2026-09", ["accounts", "placed_minor", "collected_minor"]].tolist() == [
        2, 4000, 1000
    ]  # fmt: skip
    assert out.loc["2026-09", "liquidation_rate"] == pytest.approx(0.25)
    assert out.loc["2026-10", "liquidation_rate"] == 0
