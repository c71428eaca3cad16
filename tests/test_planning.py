"""Segments, cadence and experiments: who is due what today, deterministically."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from dunning.config import Config, ConfigError, load_config
from dunning.planning import (
    HOLDOUT,
    assign_arms,
    assign_segments,
    days_off,
    plan_contacts,
    unit_hash,
)

MONDAY = date(2026, 11, 23)
NO_CONTACTS = pd.DataFrame(columns=["debtor_id", "at", "template"])

STRATEGIES = {
    "standard": {
        "min_gap_days": 3,
        "business_days": False,
        "steps": [
            {"name": "nudge", "offset_days": -3, "channels": ["email"], "template": "t_nudge"},
            {"name": "overdue", "offset_days": 3, "channels": ["email"], "template": "t_overdue"},
            {
                "name": "firm",
                "offset_days": 14,
                "channels": ["email", "sms"],
                "template": "t_firm",
                "tone": "firm",
            },
            {
                "name": "final",
                "offset_days": 30,
                "channels": ["letter"],
                "template": "t_final",
                "tone": "final",
            },
        ],
    },
    "vip": {
        "steps": [{"name": "call", "offset_days": 5, "channels": ["call"], "template": "t_call"}]
    },
}
SEGMENTS = [
    {
        "name": "disputed",
        "when": {"disputed_minor": {"gt": 0}, "overdue_minor": {"le": 0}},
        "strategy": None,
    },
    {"name": "high_value", "when": {"overdue_minor": {"ge": 1_000_000}}, "strategy": "vip"},
    {
        "name": "high_risk",
        "when": {"risk_score": {"gt": 0.7}, "kind": {"eq": "consumer"}},
        "strategy": "standard",
    },
    {"name": "chronic", "when": {"avg_days_late": {"ge": 30}}, "strategy": "standard"},
    {"name": "everyone", "strategy": "standard"},
]


def config(**extra) -> Config:
    raw = {
        "portfolio": {"name": "t"},
        "sources": [{"name": "a", "path": "a.csv", "columns": {}}],
        "strategies": STRATEGIES,
        "segments": SEGMENTS,
        **extra,
    }
    return Config.model_validate(raw)


def debtor(debtor_id: str, days: int, **kw) -> dict:
    row = {
        "debtor_id": debtor_id,
        "currency": "USD",
        "open_minor": 10_000,
        "overdue_minor": 10_000,
        "disputed_minor": 0,
        "days_to_oldest_due": days,
        "max_days_past_due": days,
        "oldest_due_date": pd.Timestamp(MONDAY - timedelta(days=days)),
        "kind": "consumer",
        "country": "US",
        "risk_score": 0.2,
        "avg_days_late": 0.0,
    }
    if days <= 0:
        row["overdue_minor"] = 0
    row.update(kw)
    return row


def view(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def contacts(*rows: tuple[str, date, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"debtor_id": d, "at": pd.Timestamp(day, tz="UTC"), "template": t} for d, day, t in rows]
    )


def plan(frame, cfg=None, day=MONDAY, history=NO_CONTACTS):
    return plan_contacts(frame, cfg or config(), day, history)


# --- segments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "segment"),
    [
        (debtor("D1", -2, disputed_minor=500), "disputed"),
        (debtor("D1", 20, overdue_minor=2_000_000), "high_value"),
        (debtor("D1", 20, risk_score=0.9), "high_risk"),
        (debtor("D1", 20, risk_score=0.9, kind="commercial"), "everyone"),
        (debtor("D1", 20, avg_days_late=45.0), "chronic"),
        (debtor("D1", 20), "everyone"),
        (debtor("D1", 20, risk_score=float("nan")), "everyone"),  # unknown score never matches
    ],
)
def test_every_debtor_gets_exactly_one_segment_and_why(row, segment):
    out = assign_segments(view(row), config())
    assert out["segment"].tolist() == [segment]
    assert out["segment_reason"].iloc[0].startswith(f"{segment}: ")


def test_reason_spells_out_the_rule():
    out = assign_segments(view(debtor("D1", 20, risk_score=0.9)), config())
    assert out["segment_reason"].iloc[0] == "high_risk: risk_score > 0.7 and kind = consumer"


def test_priorities_order_segments():
    segs = [dict(s, priority=10 - i) for i, s in enumerate(SEGMENTS)]
    segs[-1]["priority"] = 99  # the catch-all stays last
    out = assign_segments(
        view(debtor("D1", 20, overdue_minor=2_000_000, avg_days_late=45.0)), config(segments=segs)
    )
    assert out["segment"].tolist() == ["chronic"]


# --- cadence -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "step"),
    [(-4, None), (-3, "nudge"), (0, "nudge"), (2, None), (3, "overdue"), (40, "overdue")],
)
def test_offsets_from_the_oldest_due_date_and_pre_due_skipped_once_late(days, step):
    planned = plan(view(debtor("D1", days)))
    assert (planned["step"].tolist() or [None]) == [step]


def test_escalates_only_when_the_previous_step_happened():
    d = debtor("D1", 20)
    due = MONDAY - timedelta(days=20)
    assert plan(view(d))["step"].tolist() == ["overdue"]  # never jumps to "firm"
    after_overdue = contacts(("D1", due + timedelta(days=3), "t_overdue"))
    firm = plan(view(d), history=after_overdue)
    assert firm["step"].tolist() == ["firm", "firm"]
    assert firm["channel"].tolist() == ["email", "sms"]  # one row per channel
    assert set(firm["tone"]) == {"firm"}


def test_minimum_gap_since_the_last_contact():
    due = MONDAY - timedelta(days=20)
    history = contacts(
        ("D1", due + timedelta(days=3), "t_overdue"), ("D1", MONDAY - timedelta(days=2), "x")
    )
    assert plan(view(debtor("D1", 20)), history=history).empty
    history = contacts(
        ("D1", due + timedelta(days=3), "t_overdue"), ("D1", MONDAY - timedelta(days=3), "x")
    )
    assert not plan(view(debtor("D1", 20)), history=history).empty


def test_a_new_delinquency_cycle_starts_the_cadence_again():
    old = contacts(("D1", MONDAY - timedelta(days=200), "t_overdue"))
    assert plan(view(debtor("D1", 5)), history=old)["step"].tolist() == ["overdue"]


def test_last_step_done_means_nothing_more_to_plan():
    due = MONDAY - timedelta(days=60)
    history = contacts(
        *[
            ("D1", due + timedelta(days=o), t)
            for o, t in ((3, "t_overdue"), (14, "t_firm"), (30, "t_final"))
        ]
    )
    assert plan(view(debtor("D1", 60)), history=history).empty


@pytest.mark.parametrize(
    ("row", "planned"),
    [
        (debtor("D1", 20, overdue_minor=0), False),  # paid (credit notes net it out)
        (debtor("D1", 20, dispute_open=True), False),
        (debtor("D1", 20, promise_active=True), False),
        (debtor("D1", 20, plan_current=True), False),
        (debtor("D1", 20, placed=True), False),
        (debtor("D1", 20, disputed_minor=500), True),  # disputed invoice left out, not the debtor
    ],
)
def test_stop_conditions(row, planned):
    assert plan(view(row)).empty is not planned


def test_strategy_can_ignore_a_stop_condition():
    strategies = {**STRATEGIES, "standard": {**STRATEGIES["standard"], "stop_when": ["paid"]}}
    assert not plan(
        view(debtor("D1", 20, promise_active=True)), config(strategies=strategies)
    ).empty


def test_a_debtor_with_an_agency_never_gets_our_reminders_whatever_stop_when_says():
    strategies = {**STRATEGIES, "standard": {**STRATEGIES["standard"], "stop_when": ["paid"]}}
    assert plan(view(debtor("D1", 20, placed=True)), config(strategies=strategies)).empty


def test_segment_without_strategy_is_not_contacted():
    assert plan(view(debtor("D1", -2, disputed_minor=500))).empty


def test_weekends_and_holidays_in_the_debtors_country():
    strategies = {**STRATEGIES, "standard": {**STRATEGIES["standard"], "business_days": True}}
    cfg = config(strategies=strategies)
    rows = view(debtor("US1", 20), debtor("SA1", 20, country="SA"), debtor("GB1", 20, country="GB"))
    friday = date(2026, 11, 27)  # a working day in the US and UK, the weekend in Saudi Arabia
    assert set(plan(rows, cfg, friday)["debtor_id"]) == {"US1", "GB1"}
    thanksgiving = date(2026, 11, 26)
    assert set(plan(rows, cfg, thanksgiving)["debtor_id"]) == {"SA1", "GB1"}
    christmas = date(2026, 12, 25)
    assert plan(rows, cfg, christmas).empty
    saturday = date(2026, 11, 28)
    assert plan(rows, cfg, saturday).empty
    assert days_off(pd.Series(["US", "FR", "AE"]), date(2026, 7, 14)).tolist() == [
        False,
        True,
        False,
    ]


def test_same_day_same_plan_and_deterministic_keys():
    rows = view(*[debtor(f"D{i}", i % 45 - 5) for i in range(200)])
    first, second = plan(rows), plan(rows.sample(frac=1, random_state=3))
    pd.testing.assert_frame_equal(first, second)
    assert first["contact_key"].is_unique
    assert first["contact_key"].iloc[0] == (
        f"{first['debtor_id'].iloc[0]}:standard:{first['step'].iloc[0]}:"
        f"{first['channel'].iloc[0]}:2026-11-23"
    )


# --- experiments -------------------------------------------------------------------------------


EXPERIMENT = {
    "name": "subject_test",
    "segments": ["everyone"],
    "holdout_share": 0.2,
    "arms": [
        {"name": "control", "weight": 1},
        {
            "name": "short",
            "weight": 1,
            "templates": {"overdue": "t_overdue_short"},
            "offsets": {"overdue": 1},
        },
    ],
}


def test_arm_assignment_is_stable_and_follows_the_shares():
    ids = pd.Series([f"D{i:06d}" for i in range(20_000)])
    u = unit_hash(ids, "subject_test")
    assert u.equals(unit_hash(ids.sample(frac=1, random_state=1).sort_index(), "subject_test"))
    assert u.min() >= 0 and u.max() < 1
    frame = assign_segments(view(*[debtor(i, 20) for i in ids]), config())
    arms = assign_arms(frame, config(experiments=[EXPERIMENT]))["arm"].value_counts(normalize=True)
    assert arms[HOLDOUT] == pytest.approx(0.2, abs=0.015)
    assert arms["control"] == pytest.approx(0.4, abs=0.015)
    assert arms["short"] == pytest.approx(0.4, abs=0.015)


def test_arms_change_template_and_offset_and_holdout_gets_nothing():
    cfg = config(experiments=[EXPERIMENT])
    rows = view(*[debtor(f"D{i}", 2) for i in range(300)])
    planned = plan(rows, cfg)
    arms = assign_arms(assign_segments(rows, cfg), cfg).set_index("debtor_id")["arm"]
    assert set(planned["debtor_id"]) == set(arms[arms == "short"].index)  # day 2: only offset 1
    assert set(planned["template"]) == {"t_overdue_short"}
    assert set(planned["arm"]) == {"short"}
    assert not set(planned["debtor_id"]) & set(arms[arms == HOLDOUT].index)


def test_experiment_outside_its_segments_leaves_debtors_alone():
    cfg = config(experiments=[dict(EXPERIMENT, segments=["chronic"])])
    planned = plan(view(debtor("D1", 3)), cfg)
    assert planned["arm"].tolist() == [""]


# --- config errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"segments": [{"name": "all", "strategy": "nope"}]},
            r"segments\.0\.strategy: no strategy 'nope'",
        ),
        (
            {
                "segments": [
                    {"name": "a", "when": {"risk_score": {"gt": 1}}, "strategy": "standard"}
                ]
            },
            "the last segment .* must have no conditions",
        ),
        (
            {
                "segments": [
                    {
                        "name": "a",
                        "when": {"risk_score": {"gt": 1}},
                        "strategy": "standard",
                        "priority": 1,
                    },
                    {
                        "name": "b",
                        "when": {"kind": {"eq": "x"}},
                        "strategy": "standard",
                        "priority": 1,
                    },
                    {"name": "c", "strategy": "standard", "priority": 2},
                ]
            },
            "'a' and 'b' share priority 1",
        ),
        (
            {"segments": [{"name": "a", "when": {"score": {"gt": 1}}, "strategy": "standard"}]},
            r"segments\.0\.when.*unknown feature\(s\) \['score'\]",
        ),
        (
            {
                "strategies": {
                    "standard": {
                        "steps": [
                            {"name": "s", "offset_days": 1, "channels": ["fax"], "template": "t"}
                        ]
                    }
                }
            },
            r"strategies\.standard\.steps\.0\.channels\.0",
        ),
        (
            {
                "strategies": {
                    "standard": {
                        "steps": [
                            {"name": "a", "offset_days": 5, "channels": ["email"], "template": "t"},
                            {"name": "b", "offset_days": 1, "channels": ["email"], "template": "t"},
                        ]
                    }
                }
            },
            "offsets must strictly increase",
        ),
        (
            {"experiments": [dict(EXPERIMENT, arms=[{"name": "x", "templates": {"nostep": "t"}}])]},
            r"experiments\.0\.arms\.x: no step named \['nostep'\]",
        ),
        (
            {},  # the t_* templates of STRATEGIES exist nowhere
            r"strategies\.standard\.steps\.2\.template: no sms template 't_firm' in .*"
            r"\(missing sms/t_firm\.en\.txt\)",
        ),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path, change, message):
    import yaml

    raw = {
        "portfolio": {"name": "t"},
        "sources": [{"name": "a", "path": "a.csv", "columns": {}}],
        "strategies": STRATEGIES,
        "segments": SEGMENTS,
        **change,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_contacts_from_the_ledger_drive_escalation_and_gap(tmp_path):
    import sqlalchemy as sa

    from dunning import ledger
    from dunning.planning import recent_contacts

    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledger.migrate(url)
    due = MONDAY - timedelta(days=20)
    attempts = [
        ("c1", "D1", due + timedelta(days=3), "t_overdue"),
        ("c2", "D1", due + timedelta(days=4), "t_overdue"),  # same template, later
        ("c3", "D2", MONDAY - timedelta(days=1), "t_overdue"),  # inside D2's minimum gap
        ("c4", "D3", MONDAY, "t_overdue"),  # today: not "before as_of", ignored
    ]
    with ledger.ledger(url) as engine:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(ledger.ContactAttempt.__table__),
                [
                    {
                        "contact_id": c,
                        "debtor_id": d,
                        "at": pd.Timestamp(day, tz="UTC").to_pydatetime(),
                        "channel": "email",
                        "template": t,
                    }
                    for c, d, day, t in attempts
                ],
            )
        history = recent_contacts(engine, MONDAY)
    assert len(history) == 2  # one row per debtor and template, today's contact not included
    planned = plan(view(debtor("D1", 20), debtor("D2", 20), debtor("D3", 20)), history=history)
    assert planned.groupby("debtor_id")["step"].first().to_dict() == {"D1": "firm", "D3": "overdue"}
