"""The compliance gate on the daily run: state from the ledger as of the date, decisions with
all reasons, send windows, and the property that more facts never allow more."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dunning import lake, ledger
from dunning.compliance import REASONS, comply_to_lake, what_if
from dunning.config import Config, Policy

AS_OF = date(2026, 11, 23)  # a Monday; New York is on EST (UTC-5)


# --- property: adding history or a restriction never allows a blocked contact -------------------

ZONES = ["America/New_York", "America/Los_Angeles", "Europe/London", "Asia/Dubai", "UTC"]
CHANNEL = st.sampled_from(["call", "sms", "email", "letter"])
INSTANT = st.datetimes(
    min_value=datetime(2026, 3, 1), max_value=datetime(2026, 11, 30), timezones=st.just(UTC)
)
PLACE = st.sampled_from(
    [("US", "MA", "Boston"), ("US", "NY", "New York"), ("US", "TX", "Austin"), ("GB", "", "Leeds")]
)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@st.composite
def attempt(draw: st.DrawFn, before: datetime) -> dict:
    at = draw(st.datetimes(min_value=datetime(2026, 2, 1), max_value=before.replace(tzinfo=None)))
    return {
        "at": iso(at.replace(tzinfo=UTC)),
        "channel": draw(CHANNEL),
        "connected": draw(st.booleans()),
        "conversation": draw(st.booleans()),
    }


@st.composite
def window(draw: st.DrawFn) -> dict:
    start, end = sorted(draw(st.lists(st.integers(0, 23), min_size=2, max_size=2)))
    return {
        "weekdays": draw(st.lists(st.integers(0, 6), min_size=1, max_size=7, unique=True)),
        "start": f"{start:02d}:00",
        "end": f"{end:02d}:30",
    }


@st.composite
def record(draw: st.DrawFn) -> dict:
    at = draw(INSTANT)
    country, state, city = draw(PLACE)
    flags = ("deceased", "bankruptcy", "cease_communication", "attorney_represented")
    return {
        "id": "p",
        "at": iso(at),
        "channel": draw(CHANNEL),
        "debt": {"purpose": draw(st.sampled_from(["consumer", "commercial"]))},
        "debtor": {
            "country": country,
            "state": state,
            "city": city,
            "timezones": draw(
                st.lists(st.sampled_from(ZONES), min_size=1, max_size=2, unique=True)
            ),
            **{f: draw(st.booleans()) for f in flags},
            "breathing_space": draw(st.booleans()),
            "employer_email": draw(st.booleans()),
            "dispute": draw(st.sampled_from(["none", "pending", "resolved"])),
            "opted_out": draw(st.lists(CHANNEL, unique=True, max_size=2)),
            "consented": draw(st.lists(CHANNEL, unique=True, max_size=4)),
            "inconvenient_times": draw(st.lists(window(), max_size=2)),
        },
        "history": draw(st.lists(attempt(at), max_size=10)),
    }


@st.composite
def more_facts(draw: st.DrawFn, rec: dict) -> dict:
    """The same contact with one more earlier attempt or one more restriction."""
    out = json.loads(json.dumps(rec))
    debtor = out["debtor"]
    change = draw(st.sampled_from(["history", "flag", "opt_out", "consent", "window", "zone"]))
    if change == "history":
        at = datetime.fromisoformat(rec["at"].replace("Z", "+00:00"))
        out["history"].append(draw(attempt(at)))
    elif change == "flag":
        flag = draw(
            st.sampled_from(
                [
                    *("deceased", "bankruptcy", "cease_communication", "attorney_represented"),
                    *("breathing_space", "employer_email", "dispute", "purpose"),
                ]
            )
        )
        if flag == "dispute":
            debtor["dispute"] = "pending"
        elif flag == "purpose":
            out["debt"]["purpose"] = "consumer"
        else:
            debtor[flag] = True
    elif change == "opt_out":
        debtor["opted_out"] = sorted(set(debtor["opted_out"]) | {draw(CHANNEL)})
    elif change == "consent":
        debtor["consented"] = [c for c in debtor["consented"] if c != draw(CHANNEL)]
    elif change == "window":
        debtor["inconvenient_times"].append(draw(window()))
    else:  # one more candidate zone, after the first (local days keep counting in the first)
        extra = draw(st.sampled_from(ZONES))
        if extra not in debtor["timezones"]:
            debtor["timezones"].append(extra)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_more_history_or_a_restriction_never_turns_blocked_into_allowed(data):
    before = data.draw(record())
    after = data.draw(more_facts(before))
    first, second = what_if([json.dumps(before), json.dumps(after)])
    assert "error" not in first and "error" not in second, (first, second)
    if not first["allowed"]:
        assert not second["allowed"], (before, after, first, second)
    assert set(first["reasons"]) <= set(second["reasons"]), (before, after, first, second)


# --- send windows ------------------------------------------------------------------------------


def explain(**fields) -> dict:
    base = {"id": "w", "channel": "email", "debtor": {"timezones": ["America/New_York"]}}
    base.update(fields)
    (out,) = what_if([json.dumps(base)], explain=True)
    return out


@pytest.mark.clock
@pytest.mark.parametrize(
    ("at", "zones", "expected"),
    [
        # 07:00 EST -> 08:00 EST the same day
        ("2026-11-23T12:00:00Z", ["America/New_York"], "2026-11-23T13:00:00Z"),
        # two zones: 08:00 in Los Angeles is the first instant inside both
        (
            "2026-11-23T12:00:00Z",
            ["America/New_York", "America/Los_Angeles"],
            "2026-11-23T16:00:00Z",
        ),
        # 21:30 EDT on the night before the fall-back: 08:00 EST the next morning is 13:00Z
        ("2026-11-01T01:30:00Z", ["America/New_York"], "2026-11-01T13:00:00Z"),
        # spring-forward morning: 08:00 EDT is 12:00Z
        ("2026-03-08T10:00:00Z", ["America/New_York"], "2026-03-08T12:00:00Z"),
        # New York and Dubai share 08:00-12:00 New York time (17:00-21:00 in Dubai)
        ("2026-11-23T12:00:00Z", ["America/New_York", "Asia/Dubai"], "2026-11-23T13:00:00Z"),
    ],
)
def test_a_contact_blocked_only_by_the_clock_gets_the_next_allowed_time(at, zones, expected):
    out = explain(at=at, debtor={"timezones": zones})
    assert out["reasons"] == ["OUTSIDE_HOURS"]
    assert out["next_allowed_at"] == expected


@pytest.mark.clock
def test_the_next_window_also_skips_designated_times():
    out = explain(
        at="2026-11-23T12:00:00Z",  # Monday 07:00 EST
        debtor={
            "timezones": ["America/New_York"],
            "inconvenient_times": [{"weekdays": [0], "start": "08:00", "end": "12:30"}],
        },
    )
    assert out["reasons"] == ["OUTSIDE_HOURS"]
    assert out["next_allowed_at"] == "2026-11-23T17:30:00Z"  # 12:30 EST


@pytest.mark.clock
def test_no_allowed_time_within_two_days_gives_none():
    out = explain(
        at="2026-11-23T12:00:00Z",
        debtor={
            "timezones": ["America/New_York"],
            "inconvenient_times": [{"weekdays": list(range(7)), "start": "08:00", "end": "21:00"}],
        },
    )
    assert out["reasons"] == ["OUTSIDE_HOURS"] and out["next_allowed_at"] is None


@pytest.mark.clock
def test_a_contact_blocked_for_more_than_the_clock_is_not_rescheduled():
    out = explain(at="2026-11-23T12:00:00Z", debtor={"timezones": ["UTC"], "bankruptcy": True})
    assert out["reasons"] == ["BANKRUPTCY"]
    assert out["next_allowed_at"] is None


# --- the daily run against the ledger ----------------------------------------------------------

DEBTORS = [
    # debtor_id, kind, country, region, city, timezones, consent_sms, opted_out
    ("D1", "consumer", "US", "TX", "Austin", "America/Chicago", True, ""),
    ("D2", "consumer", "US", "NY", "New York", "America/New_York", True, ""),
    ("D3", "consumer", "US", "CA", "Los Angeles", "America/Los_Angeles", True, ""),
    ("D4", "consumer", "GB", "England", "Leeds", "Europe/London", True, ""),
    ("D5", "commercial", "US", "TX", "Dallas", "America/Chicago", False, "sms"),
    ("D6", "consumer", "US", "TX", "Austin", "America/Chicago", True, ""),
]


@pytest.fixture
def day(tmp_path):
    """A ledger with six debtors, their events and attempts, and a plan for AS_OF."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledger.migrate(url)
    root = lake.root((tmp_path / "lake").as_uri())
    with ledger.ledger(url) as engine, engine.begin() as conn:
        conn.execute(
            sa.insert(ledger.Debtor.__table__),
            [
                {
                    "debtor_id": d,
                    "source": "s",
                    "name": "x",
                    "kind": kind,
                    "country": country,
                    "region": region,
                    "city": city,
                    "timezones": zones,
                    "locale": "en",
                    "employer_email": False,
                    "consent_email": True,
                    "consent_sms": sms,
                    "opted_out": out,
                    "first_seen_as_of": AS_OF,
                    "last_seen_as_of": AS_OF,
                }
                for d, kind, country, region, city, zones, sms, out in DEBTORS
            ],
        )
        conn.execute(
            sa.insert(ledger.Snapshot.__table__),
            [
                {
                    "as_of": AS_OF,
                    "source": "erp",
                    "dataset": "invoices",
                    "source_file": "f",
                    "rows_read": 1,
                    "rows_loaded": 1,
                    "rows_quarantined": 0,
                    "open_minor": {},
                    "lake_key": "k",
                    "loaded_at": datetime(2026, 11, 23, 8, tzinfo=UTC),
                }
            ],
        )
        invoice = {
            "as_of": AS_OF,
            "source": "erp",
            "doc_type": "invoice",
            "issue_date": date(2026, 9, 1),
            "due_date": date(2026, 10, 1),
            "currency": "USD",
            "amount_minor": 100,
            "open_minor": 100,
            "source_row": 2,
        }
        conn.execute(
            sa.insert(ledger.InvoiceSnapshot.__table__),
            [
                {**invoice, "invoice_id": "INV-4", "debtor_id": "D4"},
                {**invoice, "invoice_id": "INV-1", "debtor_id": "D1"},
            ],
        )
    plan = pd.DataFrame(
        {
            "debtor_id": ["D1", "D1", "D2", "D2", "D3", "D4", "D5", "D6"],
            "channel": ["email", "sms", "email", "sms", "email", "email", "sms", "call"],
        }
    )
    plan["contact_key"] = plan["debtor_id"] + ":s:step:" + plan["channel"] + ":" + str(AS_OF)
    key = "plans/as_of=2026-11-23/planned_contacts.parquet"
    lake.write_parquet(root / key, plan)
    return url, root, key


def add_events(url, *rows):
    with ledger.ledger(url) as engine, engine.begin() as conn:
        conn.execute(
            sa.insert(ledger.ComplianceEvent.__table__),
            [
                dict(
                    zip(
                        ("debtor_id", "event", "channel", "effective_date", "detail"),
                        r,
                        strict=True,
                    )
                )
                for r in rows
            ],
        )


def add_attempts(url, *rows):
    with ledger.ledger(url) as engine, engine.begin() as conn:
        conn.execute(
            sa.insert(ledger.ContactAttempt.__table__),
            [
                {
                    "contact_id": f"c{i}",
                    "debtor_id": d,
                    "at": at,
                    "channel": ch,
                    "connected": True,
                    "conversation": talk,
                }
                for i, (d, at, ch, talk) in enumerate(rows)
            ],
        )


def decide(url, root, key, as_of=AS_OF, **policy):
    cfg = Config.model_validate(
        {
            "portfolio": {"name": "t"},
            "schedule": {"timezone": "America/New_York"},
            "sources": [{"name": "a", "path": "a.csv", "columns": {}}],
            "compliance": {"send_time": "09:00", **policy},
        }
    )
    with ledger.ledger(url) as engine:
        result = comply_to_lake(cfg, as_of, root, engine, key)
    frame = lake.read_parquet(root / result["decisions"]).set_index("contact_key")
    return result, frame


def row(frame, debtor, channel):
    return frame.loc[f"{debtor}:s:step:{channel}:{AS_OF}"]


@pytest.mark.clock
def test_daily_decisions_record_status_reasons_version_and_snapshot(day):
    url, root, key = day
    add_events(
        url,
        ("D1", "dispute_opened", None, date(2026, 11, 1), None),
        ("D1", "dispute_resolved", None, date(2026, 11, 22), None),  # resolved yesterday
        ("D4", "dispute_opened", None, date(2026, 11, 2), '{"invoice_id":"INV-4"}'),
        ("D6", "bankruptcy", None, date(2026, 11, 10), None),
        ("D6", "cease_communication", None, date(2026, 11, 11), None),
    )
    result, frame = decide(url, root, key)
    assert row(frame, "D1", "email")["status"] == "allowed"  # dispute resolved yesterday
    # 09:00 New York is 06:00 in Los Angeles: moved to 08:00 there, the same day
    d3 = row(frame, "D3", "email")
    assert d3["status"] == "scheduled" and d3["reasons"] == "OUTSIDE_HOURS"
    assert pd.Timestamp(d3["send_at"]) == pd.Timestamp("2026-11-23T16:00:00Z")
    # a UK dispute about an open invoice pauses the whole debtor (UK-06 policy)
    assert row(frame, "D4", "email")["reasons"] == "DISPUTE_PENDING"
    # commercial debtor: the master's sms opt-out still blocks; consent is a consumer rule
    assert row(frame, "D5", "sms")["reasons"] == "CHANNEL_OPT_OUT"
    assert row(frame, "D6", "call")["reasons"] == "BANKRUPTCY,CEASE_COMMUNICATION"
    assert result["contacts_suppressed"] == {
        "BANKRUPTCY": 1,
        "CEASE_COMMUNICATION": 1,
        "DISPUTE_PENDING": 1,
        "CHANNEL_OPT_OUT": 1,
    }
    assert result["contacts_scheduled"] == 1
    with ledger.ledger(url) as engine, engine.connect() as conn:
        stored = pd.read_sql(sa.select(ledger.ContactDecision.__table__), conn)
    assert len(stored) == 8
    assert set(stored["rules_version"]) == {result["rules_version"]}
    assert set(stored["snapshot_ids"]) == {"1"}
    # re-running the date replaces its decisions, it does not add to them
    decide(url, root, key)
    with ledger.ledger(url) as engine, engine.connect() as conn:
        again = conn.execute(
            sa.select(sa.func.count()).select_from(ledger.ContactDecision)
        ).scalar()
    assert again == 8


def test_a_rerun_keeps_the_decision_a_message_was_sent_under(day, pin_clock):
    """Reg F 1006.100: the record of why we contacted somebody outlives any re-run."""
    url, root, key = day
    decide(url, root, key)
    sent = f"D1:s:step:email:{AS_OF}"
    with ledger.ledger(url) as engine, engine.begin() as conn:
        conn.execute(
            sa.insert(ledger.Message.__table__),
            [{"contact_key": sent, "as_of": date(2026, 11, 23), "debtor_id": "D1",
              "channel": "email", "template": "t", "template_version": "v", "locale": "en",
              "status": "sent", "claim": "c", "claimed_at": pd.Timestamp("2026-11-23T15:00Z")}],
        )  # fmt: skip
    pin_clock("2026-11-23T18:00:00Z")  # the day re-run in the afternoon
    decide(url, root, key)
    with ledger.ledger(url) as engine, engine.connect() as conn:
        stored = pd.read_sql(sa.select(ledger.ContactDecision.__table__), conn)
    mine = stored[stored["contact_key"] == sent].sort_values("version")
    assert list(mine["version"]) == [1, 2]  # both kept
    assert mine["superseded_at"].notna().tolist() == [True, False]
    others = stored[stored["contact_key"] != sent]
    assert len(others) == 7 and set(others["version"]) == {1}  # nothing sent: replaced


def test_an_invoice_dispute_outside_the_uk_leaves_the_debtor_contactable(day):
    url, root, key = day
    add_events(url, ("D1", "dispute_opened", None, date(2026, 11, 2), '{"invoice_id":"INV-1"}'))
    _, frame = decide(url, root, key)
    assert row(frame, "D1", "email")["status"] == "allowed"
    _, frame = decide(url, root, key, whole_debtor_dispute_countries=["US", "GB"])
    assert row(frame, "D1", "email")["reasons"] == "DISPUTE_PENDING"


@pytest.mark.clock
def test_an_opt_out_received_after_the_plan_was_made_blocks_the_contact(day):
    url, root, key = day
    _, frame = decide(url, root, key)
    assert row(frame, "D1", "sms")["status"] == "allowed"
    add_events(url, ("D1", "sms_stop", "sms", AS_OF, None))  # STOP reply this morning
    result, frame = decide(url, root, key)
    assert row(frame, "D1", "sms")["reasons"] == "CHANNEL_OPT_OUT"
    assert row(frame, "D1", "email")["status"] == "allowed"  # other channels are unaffected
    assert result["contacts_suppressed"]["CHANNEL_OPT_OUT"] == 2  # with D5's sms


@pytest.mark.clock
def test_a_backfill_sees_the_state_as_of_its_date(day):
    url, root, key = day
    add_events(url, ("D6", "bankruptcy", None, date(2026, 11, 10), None))
    past = date(2026, 11, 9)
    plan = lake.read_parquet(root / key)
    plan["contact_key"] = plan["contact_key"].str.replace(str(AS_OF), str(past))
    past_key = f"plans/as_of={past}/planned_contacts.parquet"
    lake.write_parquet(root / past_key, plan)
    _, frame = decide(url, root, past_key, as_of=past)
    assert frame.loc[f"D6:s:step:call:{past}", "reasons"] == ""
    _, frame = decide(url, root, key)
    assert row(frame, "D6", "call")["reasons"] == "BANKRUPTCY"


@pytest.mark.clock
def test_new_york_city_counts_the_days_own_contacts_and_earlier_attempts(day):
    url, root, key = day
    add_attempts(
        url,
        ("D2", datetime(2026, 11, 19, 15, tzinfo=UTC), "letter", False),
        ("D2", datetime(2026, 11, 20, 15, tzinfo=UTC), "email", False),
    )
    _, frame = decide(url, root, key)
    # two earlier attempts: today's email is the third and allowed, the sms would be the fourth
    assert row(frame, "D2", "email")["status"] == "allowed"
    assert row(frame, "D2", "sms")["reasons"] == "STATE_FREQUENCY"


@pytest.mark.clock
def test_a_conversation_last_week_pauses_calls_but_not_email(day):
    url, root, key = day
    add_attempts(url, ("D6", datetime(2026, 11, 17, 16, tzinfo=UTC), "call", True))  # day 1
    _, frame = decide(url, root, key)  # Nov 23 is day 7
    assert row(frame, "D6", "call")["reasons"] == "CONVERSATION_COOLDOWN"


def test_every_reason_code_is_in_the_fixed_vocabulary():
    assert len(REASONS) == 14
    assert Policy().hours_end == "21:00"
