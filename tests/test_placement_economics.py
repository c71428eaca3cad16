"""The cut-off recommendation on a hand-computed recovery curve."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from dunning.config import Config
from dunning.placement import economics

LATE = [5, 10, 20, 40, 70, 100, 150, None, None, None]  # days after due each was paid


def config(**economics_cfg) -> Config:
    return Config.model_validate(
        {
            "portfolio": {"name": "Test"},
            "sources": [{"name": "erp", "path": "x.csv", "columns": {}}],
            "segments": [
                {"name": "a", "when": {"country": {"eq": "US"}}, "strategy": "standard"},
                {"name": "b", "strategy": "standard"},
            ],
            "placement": {
                "cutoff": {"days_past_due": 60, "by_segment": {"b": 90}},
                "agencies": [{"name": "x", "commission_rate": 0, "layout": {"fields": ["name"]}}],
                "economics": {
                    "horizon_days": 30,
                    "agency_liquidation": 0.2,
                    "cost_per_contact_minor": {"email": 0},
                    **economics_cfg,
                },
            },
        }
    )


def invoices(debtor: str, late: list) -> pd.DataFrame:
    due = pd.Timestamp("2025-01-01")
    return pd.DataFrame(
        {
            "debtor_id": debtor,
            "due_date": due,
            "amount_minor": 100,
            "paid_date": [due + pd.Timedelta(days=d) if d is not None else pd.NaT for d in late],
        }
    )


def test_break_even_is_the_first_day_in_house_recovery_falls_below_the_agencys():
    cfg = config()
    frame = economics.curve(invoices("D1", LATE), pd.Series({"D1": "a"}), cfg, date(2026, 11, 23))
    a = frame[frame["segment"] == "a"].set_index("days_past_due")
    # unpaid at 0: all 10, 3 paid within 30 days; at 15: 8 left, 2 paid by day 45; at 30: 7, 1
    assert a.loc[[0, 15, 30], "invoices"].tolist() == [10, 8, 7]
    assert a.loc[[0, 15, 30], "inhouse_recovery"].tolist() == pytest.approx([0.3, 0.25, 1 / 7])
    advice = economics.recommend(frame, cfg).set_index("segment")
    assert advice.loc["a", ["configured_days", "recommended_days"]].tolist() == [60, 30]
    assert advice.loc[economics.ALL, "recommended_days"] == 30


def test_contact_costs_bring_the_break_even_forward_and_commission_lowers_the_agency():
    cfg = config(cost_per_contact_minor={"email": 8}, contacts_per_month=1)
    frame = economics.curve(invoices("D1", LATE), pd.Series({"D1": "a"}), cfg, date(2026, 11, 23))
    # 8 per contact, one a month over 30 days, on balances of 100: 8 % of the balance
    assert frame["inhouse_cost_share"].dropna().unique() == pytest.approx([0.08])
    advice = economics.recommend(frame, cfg).set_index("segment")
    assert advice.loc["a", "recommended_days"] == 15  # 0.3 - 0.08 >= 0.2 > 0.25 - 0.08
    paid = Config.model_validate(
        {**cfg.model_dump(exclude={"source_file"}),
         "placement": {**cfg.placement.model_dump(),
                       "agencies": [{"name": "x", "commission_rate": 0.5,
                                     "layout": {"fields": ["name"]}}]}}
    )  # fmt: skip
    assert economics.agency_net(paid) == pytest.approx(0.1)


def test_debts_too_young_to_have_a_full_window_do_not_count():
    cfg = config()
    young = invoices("D1", [None] * 10).assign(due_date=pd.Timestamp("2026-11-01"))
    frame = economics.curve(young, pd.Series({"D1": "a"}), cfg, date(2026, 11, 23))
    assert (frame["invoices"] == 0).all() and np.isnan(frame["inhouse_recovery"]).all()
    assert economics.recommend(frame, cfg)["recommended_days"].isna().all()
