"""Behaviour features: a hand-computed debtor, nothing dated on or after as_of counts, and the
history mirror in the lake gives exactly the features the ledger gives."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from upath import UPath

from dunning import features, history, lake, ledger
from dunning.config import load_config
from dunning.features import behaviour_features
from dunning.generate import generate
from dunning.planning import recent_contacts
from dunning.schema import BEHAVIOUR_FEATURES

AS_OF = date(2026, 6, 15)


def inv(invoice_id, issue, due, paid, amount, debtor="D1", doc_type="invoice"):
    return {
        "invoice_id": invoice_id,
        "debtor_id": debtor,
        "doc_type": doc_type,
        "issue_date": date.fromisoformat(issue),
        "due_date": date.fromisoformat(due),
        "currency": "USD",
        "amount_minor": amount,
        "open_minor": 0 if paid else amount,
        "paid_date": date.fromisoformat(paid) if paid else None,
        "disputed": False,
    }


def pay(payment_id, day, amount, debtor="D1"):
    return {
        "payment_id": payment_id,
        "debtor_id": debtor,
        "paid_on": date.fromisoformat(day),
        "currency": "USD",
        "amount_minor": amount,
    }


def contact(contact_id, at, channel, outcome="delivered", debtor="D1"):
    return {
        "contact_id": contact_id,
        "debtor_id": debtor,
        "at": datetime.fromisoformat(at).replace(tzinfo=UTC),
        "channel": channel,
        "outcome": outcome,
    }


@pytest.fixture
def engine(ledger_engine):
    """A migrated ledger (SQLite and PostgreSQL) with one hand-computable debtor's history."""
    eng = ledger_engine
    with eng.begin() as conn:
        conn.execute(
            sa.insert(ledger.InvoiceHistory),
            [
                inv("I1", "2026-01-01", "2026-01-31", "2026-02-10", 10000),  # 10 days late
                inv("I2", "2026-02-01", "2026-03-03", "2026-04-01", 20000),  # 29 days late
                inv("I3", "2026-04-01", "2026-05-01", None, 30000),  # open
                inv("I4", "2026-05-01", "2026-05-31", "2026-07-15", 10000),  # paid after as_of
                inv("CN", "2026-05-02", "2026-05-02", None, -5000, doc_type="credit_note"),
            ],
        )
        conn.execute(
            sa.insert(ledger.Payment),
            [
                pay("P1", "2026-02-10", 10000),  # = I1: a full payment
                pay("P2", "2026-04-01", 5000),  # part payments
                pay("P3", "2026-04-05", 15000),
                pay("P4", "2026-07-15", 10000),  # after as_of
            ],
        )
        conn.execute(
            sa.insert(ledger.ContactAttempt),
            [
                contact("C1", "2026-02-05T09:00:00", "email"),  # paid 5 days later
                contact("C2", "2026-03-10T09:00:00", "sms"),  # no payment within 7 days
                contact("C3", "2026-05-20T15:00:00", "call", "promise_to_pay"),  # broken
            ],
        )
        conn.execute(
            sa.insert(ledger.ComplianceEvent),
            [
                {
                    "debtor_id": "D1",
                    "event": "dispute_opened",
                    "effective_date": date(2026, 3, 1),
                },
                {
                    "debtor_id": "D1",
                    "event": "dispute_opened",
                    "effective_date": date(2026, 7, 1),
                },
                {"debtor_id": "D1", "event": "opt_out", "effective_date": date(2026, 3, 2)},
            ],
        )
    return eng


def test_hand_computed_debtor(engine):
    frame = behaviour_features(engine, AS_OF)
    assert list(frame.columns) == ["debtor_id", *BEHAVIOUR_FEATURES]
    row = frame.set_index("debtor_id").loc["D1"]
    expected = {
        "avg_days_late": (10 + 29) / 2,
        "late_trend": 29 - 10,  # I2 paid in the last 90 days, I1 before
        "share_paid_after_first_reminder": 0.5,  # I1 5 days after C1; I2 22 days after C2
        "partial_payment_share": 2 / 3,  # P2, P3 match no invoice amount
        "promises_kept": 0,
        "promises_broken": 1,
        "disputes_12m": 1,
        "response_rate_email": 1.0,
        "response_rate_sms": 0.0,
        "response_rate_call": 0.0,
        "response_rate_letter": 0.0,
        "tenure_days": 165,  # since the first invoice, 2026-01-01
        "balance_to_usual_invoice": (30000 + 10000) / 15000,  # I3 + I4 open; median 15000
    }
    assert row.to_dict() == pytest.approx(expected)


def test_facts_on_or_after_as_of_do_not_change_features(engine):
    before = behaviour_features(engine, AS_OF)
    with engine.begin() as conn:
        conn.execute(
            sa.update(ledger.InvoiceHistory)
            .where(ledger.InvoiceHistory.invoice_id == "I3")
            .values(paid_date=AS_OF, open_minor=0)
        )
        conn.execute(
            sa.insert(ledger.InvoiceHistory), [inv("I5", "2026-06-15", "2026-07-15", None, 99)]
        )
        conn.execute(sa.insert(ledger.Payment), [pay("P5", "2026-06-15", 30000)])
        conn.execute(
            sa.insert(ledger.ContactAttempt), [contact("C4", "2026-06-15T00:00:00", "letter")]
        )
    after = behaviour_features(engine, AS_OF)
    pd.testing.assert_frame_equal(before, after)
    # ...while a day later they do count
    later = behaviour_features(engine, date(2026, 6, 16)).set_index("debtor_id").loc["D1"]
    assert (
        later["balance_to_usual_invoice"]
        != before.set_index("debtor_id").loc["D1", "balance_to_usual_invoice"]
    )


def test_debtors_without_history_get_neutral_values(engine):
    frame = behaviour_features(engine, AS_OF, debtor_ids=["D1", "NEW"])
    assert list(frame["debtor_id"]) == ["D1", "NEW"]
    new = frame.set_index("debtor_id").loc["NEW"]
    assert (new == 0).all()
    assert frame[list(BEHAVIOUR_FEATURES)].notna().all().all()


def test_before_any_history_is_empty(engine):
    frame = behaviour_features(engine, date(2025, 1, 1))
    assert frame.empty and list(frame.columns) == ["debtor_id", *BEHAVIOUR_FEATURES]


# --- the lake mirror written by the history load ---------------------------------------------

HISTORY = {
    "invoices": "invoice_history.csv",
    "payments": "payments.csv",
    "contacts": "contact_history.csv",
    "compliance_events": "compliance_events.csv",
}
LOADED_ON = date(2026, 11, 23)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A generated portfolio's history loaded into a SQLite ledger (and so mirrored to the lake),
    plus debtors with ``customer_since`` (tenure reads it from the ledger on both paths)."""
    folder = tmp_path_factory.mktemp("mirror")
    generate(folder / "portfolio", debtors=600, as_of=LOADED_ON, seed=3)
    config_path = folder / "portfolio" / "config.yaml"
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    raw["history"] = HISTORY  # the generator does not write a history section yet
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    customers = pd.read_csv(folder / "portfolio" / "customers.csv", dtype=str).head(400)
    url = f"sqlite:///{folder / 'ledger.sqlite'}"
    ledger.migrate(url)
    root = UPath(folder / "lake")
    with ledger.ledger(url) as eng:
        with eng.begin() as conn:
            conn.execute(
                sa.insert(ledger.Debtor),
                [
                    {
                        "debtor_id": row.debtor_id,
                        "source": "customers",
                        "name": "x",
                        "kind": row.kind,
                        "country": row.country,
                        "timezones": row.timezones,
                        "locale": row.locale,
                        "customer_since": date.fromisoformat(row.customer_since)
                        if isinstance(row.customer_since, str)
                        else None,
                        "first_seen_as_of": LOADED_ON,
                        "last_seen_as_of": LOADED_ON,
                    }
                    for row in customers.itertuples()
                ],
            )
        result = history.load_history(load_config(config_path), eng, root, LOADED_ON)
        yield {"engine": eng, "root": root, "result": result}


def test_history_load_writes_the_mirror(loaded):
    result, root = loaded["result"], loaded["root"]
    assert result["mirror"] == "history/as_of=2026-11-23/_manifest.json"
    manifest = lake.read_json(root / result["mirror"])
    assert set(manifest["datasets"]) == {"invoices", "payments", "contacts", "disputes"}
    assert manifest["datasets"]["invoices"]["rows"] == result["loaded"]["invoices"]
    assert manifest["datasets"]["contacts"]["rows"] == result["loaded"]["contacts"]


def test_mirror_and_ledger_give_identical_features(loaded, monkeypatch):
    engine, root = loaded["engine"], loaded["root"]
    from_sql = behaviour_features(engine, LOADED_ON)
    assert len(from_sql) > 500 and (from_sql["tenure_days"] > 0).mean() > 0.9
    read = []
    sql_tables = features._sql_tables
    monkeypatch.setattr(
        features,
        "_sql_tables",
        lambda e, lo, end, names: read.append(names) or sql_tables(e, lo, end, names),
    )
    from_mirror = behaviour_features(engine, LOADED_ON, root=root)
    assert read == [set()]  # every history dataset came from the mirror
    pd.testing.assert_frame_equal(from_sql, from_mirror, check_exact=True)
    # a subset of debtors, some unknown: same rows, same order, same neutral values
    ids = [*from_sql["debtor_id"].sample(50, random_state=0), "NEW-1", "NEW-2"]
    pd.testing.assert_frame_equal(
        behaviour_features(engine, LOADED_ON, ids),
        behaviour_features(engine, LOADED_ON, ids, root=root),
        check_exact=True,
    )


@pytest.mark.parametrize(
    "as_of",
    [date(2026, 2, 1), date(2026, 7, 31), date(2026, 11, 22), date(2027, 3, 1), date(2027, 9, 30)],
)
def test_mirror_windows_match_the_ledger_on_other_dates(loaded, as_of):
    """The mirror holds every loaded fact; the date windows and the point-in-time rule are
    applied when reading, on both paths alike (the 2027 dates leave part of the year of history
    before the window's start)."""
    engine, root = loaded["engine"], loaded["root"]
    mirror = features.mirror_folder(root, LOADED_ON)
    from_sql = features.features_from_facts(features.load_facts(engine, as_of, as_of), as_of)
    from_mirror = features.features_from_facts(
        features.load_facts(engine, as_of, as_of, mirror), as_of
    )
    pd.testing.assert_frame_equal(from_sql, from_mirror, check_exact=True)


def test_datasets_missing_from_the_mirror_are_read_from_the_ledger(loaded, tmp_path):
    engine, root = loaded["engine"], loaded["root"]
    partial = UPath(tmp_path / "lake")
    folder = features.mirror_folder(root, LOADED_ON)
    manifest = lake.read_json(folder / features.MANIFEST)["datasets"]
    parts = [
        features.MirrorPart(
            name,
            manifest[name]["table"],
            manifest[name]["table_rows"],
            manifest[name]["rows"],
            {f: (folder / f).read_bytes() for f in manifest[name]["files"]},
        )
        for name in ("invoices", "contacts")
    ]
    features.write_mirror(partial, LOADED_ON, parts)
    assert features.usable_mirror(engine, folder) == {
        "invoices",
        "payments",
        "contacts",
        "disputes",
    }
    assert features.usable_mirror(engine, features.mirror_folder(partial, LOADED_ON)) == {
        "invoices",
        "contacts",
    }
    pd.testing.assert_frame_equal(
        behaviour_features(engine, LOADED_ON),
        behaviour_features(engine, LOADED_ON, root=partial),
        check_exact=True,
    )
    # no mirror at all for the date (or a dropped one): the ledger alone
    features.drop_mirror(partial, LOADED_ON)
    assert not (features.mirror_folder(partial, LOADED_ON) / features.MANIFEST).exists()
    pd.testing.assert_frame_equal(
        behaviour_features(engine, LOADED_ON),
        behaviour_features(engine, LOADED_ON, root=partial),
        check_exact=True,
    )


@pytest.mark.parametrize("low", [0, -500])  # negative amounts take the two-key sort
def test_group_median_matches_pandas(low):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 50, 2000)
    values = rng.integers(low, 1000, 2000)
    got = features._group_median(codes, values, 60)
    want = pd.Series(values).groupby(codes).median().reindex(range(60), fill_value=0.0)
    np.testing.assert_array_equal(got, want.to_numpy())


def test_rows_added_since_the_load_make_the_mirror_stale(loaded):
    """Something other than the history load wrote a payment: the mirror no longer describes
    the payments table, so they are read from the ledger (and count)."""
    engine, root = loaded["engine"], loaded["root"]
    debtor = behaviour_features(engine, LOADED_ON)["debtor_id"].iloc[0]
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(ledger.Payment), [pay("LATE-1", "2026-11-20", 1, debtor)])
        folder = features.mirror_folder(root, LOADED_ON)
        assert features.usable_mirror(engine, folder) == {"invoices", "contacts", "disputes"}
        pd.testing.assert_frame_equal(
            behaviour_features(engine, LOADED_ON),
            behaviour_features(engine, LOADED_ON, root=root),
            check_exact=True,
        )
    finally:
        with engine.begin() as conn:
            conn.execute(sa.delete(ledger.Payment).where(ledger.Payment.payment_id == "LATE-1"))


def test_plan_contacts_from_the_mirror_match_the_ledger(loaded):
    engine, root = loaded["engine"], loaded["root"]
    for days in (400, 30):
        from_sql = recent_contacts(engine, LOADED_ON, days)
        from_mirror = recent_contacts(engine, LOADED_ON, days, root=root)
        assert len(from_sql) > 100
        for frame in (from_sql, from_mirror):
            frame["at"] = pd.to_datetime(frame["at"], utc=True)
        pd.testing.assert_frame_equal(
            from_sql.sort_values(["debtor_id", "template"], ignore_index=True),
            from_mirror,
            check_exact=True,
            check_dtype=False,
        )


def test_contacts_at_midnight_are_dated_right_on_sqlite(engine):
    """The history load stores timestamps without microseconds; SQLite compares them as text."""
    if engine.dialect.name != "sqlite":
        pytest.skip("text timestamps are SQLite's")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO contact_attempts (contact_id, debtor_id, at, channel, template) VALUES "
            "('M1', 'D1', '2026-06-15 00:00:00', 'email', 'late'), "  # as_of: not before it
            "('M2', 'D1', '2026-06-14 23:59:59', 'email', 'late'), "
            "('M3', 'D1', '2025-05-11 00:00:00', 'email', 'early')"  # as_of - 400 days: in
        )
    latest = recent_contacts(engine, AS_OF).set_index("template")["at"]
    assert str(latest["late"]) == "2026-06-14 23:59:59"
    assert str(latest["early"]) == "2025-05-11 00:00:00"
