"""Behaviour features: a hand-computed debtor, and nothing dated on or after as_of counts."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from dunning import ledger
from dunning.features import behaviour_features
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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def engine(request, tmp_path):
    url = (
        f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    ledger.migrate(url)
    with ledger.ledger(url) as eng:
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
        yield eng


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
