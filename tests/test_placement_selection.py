"""Who is placed, with which agency, and who is recalled: every exclusion and recall reason."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from dunning.config import EXCLUSIONS, Config
from dunning.placement import selection

AS_OF = date(2026, 11, 23)
LAYOUT = {"format": "csv", "fields": ["account_ref", "balance_minor"]}


def config(**placement) -> Config:
    raw = {
        "portfolio": {"name": "Test"},
        "sources": [{"name": "erp", "path": "x.csv", "columns": {}}],
        "segments": [
            {"name": "big", "when": {"overdue_minor": {"ge": 100_000}}, "strategy": "standard"},
            {"name": "small", "strategy": "standard"},
        ],
        "placement": {
            "enabled": True,
            "cutoff": {"days_past_due": 90, "min_balance_minor": 1000},
            "agencies": [{"name": "acme", "layout": LAYOUT}],
            **placement,
        },
    }
    return Config.model_validate(raw)


def view(*rows: dict) -> pd.DataFrame:
    base = {
        "segment": "small",
        "country": "US",
        "region": "",
        "kind": "consumer",
        "currency": "USD",
        "disputed_minor": 0,
        "overdue_minor": 50_000,
        "max_days_past_due": 120,
        "oldest_due_date": pd.Timestamp("2026-07-26"),
        "promise_active": False,
        "plan_current": False,
    }
    return pd.DataFrame([{**base, **r} for r in rows])


def state(*rows: dict) -> pd.DataFrame:
    base = {
        "dispute": "none",
        "bankruptcy": False,
        "deceased": False,
        "estate_representative": False,
        "breathing_space": False,
    }
    return pd.DataFrame([{**base, **r} for r in rows]).set_index("debtor_id")


def no_placements() -> pd.DataFrame:
    return pd.DataFrame(
        columns=["account_ref", "debtor_id", "agency", "status", "placed_on", "ended_on"]
    )


def placement(debtor: str, status: str = "active", placed_on="2026-10-01", ended_on=None, **kw):
    return {
        "account_ref": f"{debtor}-x",
        "debtor_id": debtor,
        "agency": "acme",
        "status": status,
        "placed_on": pd.Timestamp(placed_on).date(),
        "ended_on": pd.Timestamp(ended_on).date() if ended_on else None,
        **kw,
    }


def exclusions(frame: pd.DataFrame) -> dict[str, str]:
    return dict(zip(frame["debtor_id"], frame["exclusions"], strict=True))


def test_only_accounts_past_cutoff_and_minimum_are_considered():
    cfg = config()
    v = view(
        {"debtor_id": "old"},
        {"debtor_id": "young", "max_days_past_due": 89},
        {"debtor_id": "tiny", "overdue_minor": 999},
        {"debtor_id": "exact", "max_days_past_due": 90, "overdue_minor": 1000},
    )
    s = state(*({"debtor_id": d} for d in v["debtor_id"]))
    chosen = selection.select(v, s, no_placements(), cfg, AS_OF)
    assert exclusions(chosen) == {"old": "", "exact": ""}
    assert set(chosen["agency"]) == {"acme"}


def test_cutoff_per_segment_overrides_the_portfolio_one():
    cfg = config(cutoff={"days_past_due": 90, "by_segment": {"big": 30}})
    v = view(
        {"debtor_id": "big45", "segment": "big", "max_days_past_due": 45},
        {"debtor_id": "small45", "max_days_past_due": 45},
    )
    chosen = selection.select(v, state({"debtor_id": "big45"}, {"debtor_id": "small45"}),
                              no_placements(), cfg, AS_OF)  # fmt: skip
    assert list(chosen["debtor_id"]) == ["big45"]
    assert chosen["cutoff_days"].item() == 30


@pytest.mark.parametrize(
    ("name", "view_row", "state_row", "ledger"),
    [
        ("dispute", {}, {"dispute": "pending"}, []),
        ("promise", {"promise_active": True}, {}, []),
        ("payment_plan", {"plan_current": True}, {}, []),
        ("bankruptcy", {}, {"bankruptcy": True}, []),
        ("deceased", {}, {"deceased": True}, []),
        ("breathing_space", {}, {"breathing_space": True}, []),
        ("statute_barred", {"country": "GB", "oldest_due_date": pd.Timestamp("2020-11-23")}, {},
         []),
        ("cooling_off", {}, {}, [placement("D1", "returned", ended_on="2026-10-01")]),
        ("placed", {}, {}, [placement("D1")]),
        # placed by a later day, and this earlier date run after it (a replay, a forced run)
        ("placed", {}, {}, [placement("D1", placed_on="2026-12-07")]),
    ],
)  # fmt: skip
def test_every_exclusion_keeps_the_account_home(name, view_row, state_row, ledger):
    cfg = config(cutoff={"statute_years": {"GB": 6}})
    v = view({"debtor_id": "D1", **view_row})
    ledger_rows = pd.DataFrame(ledger) if ledger else no_placements()
    chosen = selection.select(v, state({"debtor_id": "D1", **state_row}), ledger_rows, cfg, AS_OF)
    assert exclusions(chosen) == {"D1": name}


def test_an_exclusion_left_out_of_config_does_not_apply_and_all_reasons_are_listed():
    v = view({"debtor_id": "D1", "promise_active": True})
    s = state({"debtor_id": "D1", "bankruptcy": True, "dispute": "pending"})
    everything = selection.select(v, s, no_placements(), config(), AS_OF)
    assert exclusions(everything) == {"D1": "dispute,promise,bankruptcy"}
    only = [e for e in EXCLUSIONS if e != "promise"]  # a portfolio's choice
    lenient = config(cutoff={"exclude": only})
    assert exclusions(selection.select(v, s, no_placements(), lenient, AS_OF)) == {
        "D1": "dispute,bankruptcy"
    }


def test_legal_exclusions_cannot_be_switched_off():
    with pytest.raises(ValueError, match=r"\['bankruptcy'\] cannot be left out"):
        config(cutoff={"exclude": [e for e in EXCLUSIONS if e != "bankruptcy"]})


def test_no_identity_and_several_currencies_keep_the_account_home():
    v = view({"debtor_id": "D1", "kind": None}, {"debtor_id": "D2", "other_currency_items": 2})
    s = state({"debtor_id": "D1"}, {"debtor_id": "D2"})
    assert exclusions(selection.select(v, s, no_placements(), config(), AS_OF)) == {
        "D1": selection.NO_IDENTITY,
        "D2": selection.MULTI_CURRENCY,
    }


def test_a_deceased_debtor_with_a_named_representative_can_be_placed():
    v = view({"debtor_id": "D1"})
    s = state({"debtor_id": "D1", "deceased": True, "estate_representative": True})
    assert exclusions(selection.select(v, s, no_placements(), config(), AS_OF)) == {"D1": ""}


def test_cooling_off_ends_after_the_configured_days():
    v = view({"debtor_id": "D1"})
    ledger_rows = pd.DataFrame([placement("D1", "returned", ended_on="2026-08-01")])
    chosen = selection.select(v, state({"debtor_id": "D1"}), ledger_rows, config(), AS_OF)
    assert exclusions(chosen) == {"D1": ""}  # 114 days > 90


def test_agencies_split_by_weight_segment_and_country_and_keep_a_debtor():
    agencies = [
        {"name": "champion", "weight": 3, "layout": LAYOUT},
        {"name": "challenger", "weight": 1, "layout": LAYOUT},
        {"name": "uk_only", "countries": ["GB"], "layout": LAYOUT},
        {"name": "big_only", "segments": ["big"], "countries": ["FR"], "layout": LAYOUT},
        {"name": "ma_only", "countries": ["US"], "regions": ["MA"], "layout": LAYOUT},
    ]
    cfg = config(agencies=agencies)
    us = view(*({"debtor_id": f"US{i}", "region": "TX"} for i in range(4000)))
    picked = selection.allocate(us, cfg.placement.agencies)
    share = picked.value_counts(normalize=True)
    assert set(share.index) == {"champion", "challenger"}
    assert share["champion"] == pytest.approx(0.75, abs=0.03)
    assert picked.equals(selection.allocate(us, cfg.placement.agencies))  # stable
    fr = view({"debtor_id": "F1", "country": "FR"}, {"debtor_id": "F2", "country": "FR",
                                                     "segment": "big"})  # fmt: skip
    assert set(selection.allocate(fr, cfg.placement.agencies)[1:]) <= {
        "champion", "challenger", "big_only"
    }  # fmt: skip
    ma = view(*({"debtor_id": f"MA{i}", "region": "MA"} for i in range(400)))
    assert "ma_only" in set(selection.allocate(ma, cfg.placement.agencies))
    nobody = config(agencies=[{"name": "uk", "countries": ["GB"], "layout": LAYOUT}])
    chosen = selection.select(view({"debtor_id": "D1"}), state({"debtor_id": "D1"}),
                              no_placements(), nobody, AS_OF)  # fmt: skip
    assert exclusions(chosen) == {"D1": selection.NO_AGENCY}


def test_recalls_name_the_first_reason_and_skip_todays_placements():
    active = pd.DataFrame(
        [
            placement("paid"),
            placement("disputed"),
            placement("bankrupt"),
            placement("dead"),
            placement("moratorium"),
            placement("asked"),
            placement("asked_before", placed_on="2026-11-01"),
            placement("fine"),
            placement("all_disputed"),
            placement("asked_that_day", placed_on="2026-11-20"),
            placement("today", placed_on=str(AS_OF)),
            placement("missing"),
        ]
    )
    v = view(
        *(
            {"debtor_id": d}
            for d in active["debtor_id"]
            if d not in ("paid", "all_disputed", "missing")
        ),
        {"debtor_id": "paid", "overdue_minor": 0},  # in today's AR, nothing overdue left
        {"debtor_id": "all_disputed", "overdue_minor": 0, "disputed_minor": 5000},
    )
    s = state(
        {"debtor_id": "disputed", "dispute": "pending"},
        {"debtor_id": "bankrupt", "bankruptcy": True},
        {"debtor_id": "dead", "deceased": True},
        {"debtor_id": "moratorium", "breathing_space": True},
    )
    requests = pd.DataFrame(
        {
            "debtor_id": ["asked", "asked_before", "asked_that_day"],
            "effective_date": ["2026-11-20", "2026-10-15", "2026-11-20"],
        }
    )
    known = pd.Series([d for d in active["debtor_id"] if d != "missing"])  # the day's AR
    back = selection.recalls(active, v, s, requests, AS_OF, known)
    assert dict(zip(back["debtor_id"], back["reason"], strict=True)) == {
        "paid": "PAID",
        "disputed": "DISPUTE",
        "bankrupt": "BANKRUPTCY",
        "dead": "DECEASED",
        "moratorium": "BREATHING_SPACE",
        "asked": "REQUESTED",
        "asked_that_day": "REQUESTED",
        "all_disputed": "DISPUTE",  # every invoice left is disputed: not "paid"
    }
    # Missing from today's AR (a source cut short or left out of the run): no money says
    # "paid", so the account stays placed and is reported for a person to look at.
    assert list(selection.missing_from_ar(active, known)["debtor_id"]) == ["missing"]
