"""The placement record: balances, dates, Regulation F itemization and the flags that travel."""

from __future__ import annotations

from datetime import date

import pandas as pd

from dunning.config import PLACEMENT_FIELDS
from dunning.placement import records
from tests.test_placement_selection import config

AS_OF = date(2026, 11, 23)


def test_a_record_itemizes_exactly_and_carries_the_status_flags():
    accounts = pd.DataFrame(
        {
            "account_ref": records.account_ref(pd.Series(["D1"]), AS_OF),
            "debtor_id": ["D1"],
            "agency": ["acme"],
            "segment": ["small"],
            "placed_on": [AS_OF],
            "currency": ["USD"],
            "balance_minor": [15_000],
            "days_past_due": [145],
        }
    )
    view = pd.DataFrame(
        {
            "debtor_id": ["D1"],
            "currency": ["USD"],
            "oldest_due_date": [pd.Timestamp("2026-07-01")],
            "max_days_past_due": [145],
            "disputed_minor": [2_500],
            "plan_current": [False],
            "promise_broken_on": [pd.Timestamp("2026-10-01")],
        }
    )
    state = pd.DataFrame(
        {
            "dispute": ["resolved"],
            "cease_communication": [True],
            "attorney_represented": [False],
            "vulnerable": [True],
            "consent_email": [True],
            "opt_out_sms": [True],
        },
        index=pd.Index(["D1"], name="debtor_id"),
    )
    windows = pd.DataFrame(
        {"debtor_id": ["D1", "D1"], "weekdays": [0b11111, 0b1000000], "start": [540, 0],
         "end": [1020, 1440]}
    )  # fmt: skip
    invoices = pd.DataFrame(
        {
            "invoice_id": ["I1", "I2", "I3", "I4"],
            "debtor_id": "D1",
            "currency": "USD",
            "doc_type": "invoice",
            "issue_date": pd.to_datetime(["2026-06-01", "2026-07-15", "2026-07-20", "2026-11-01"]),
            "due_date": pd.to_datetime(["2026-07-01", "2026-08-14", "2026-08-19", "2026-12-01"]),
            "amount_minor": [10_000, 8_000, 2_500, 4_000],
            "open_minor": [7_000, 8_000, 2_500, 4_000],
            "disputed": [False, False, True, False],
        }
    )
    debtors = pd.DataFrame(
        {"debtor_id": ["D1"], "name": ["Ada Lovelace"], "kind": ["consumer"], "city": ["Boston"],
         "region": ["MA"], "postal_code": ["02110"], "country": ["US"],
         "timezones": ["America/New_York"], "locale": ["en"], "email": ["ada@example.com"],
         "phone": ["+16175550100"]}
    )  # fmt: skip
    payments = pd.DataFrame(
        {"debtor_id": ["D1", "D1"], "currency": ["USD", "EUR"],
         "last_payment_date": [pd.Timestamp("2026-09-01"), pd.Timestamp("2026-10-01")],
         "last_payment_minor": [3_000, 999]}
    )  # fmt: skip
    rec = records.build_records(
        accounts, view, state, windows, invoices, debtors, payments, config()
    )
    assert list(rec.columns) == list(PLACEMENT_FIELDS)
    r = rec.iloc[0]
    assert r["account_ref"] == "D1-20261123" and r["customer_ref"] == "D1"
    # the overdue, undisputed invoices: I1 and I2 (I3 disputed, I4 not yet due)
    assert (r["invoice_count"], r["invoice_refs"], r["original_minor"]) == (2, "I1;I2", 18_000)
    assert r["balance_minor"] == r["principal_minor"] == 15_000
    # Reg F: itemization + interest + fees - payments and credits = balance
    assert r["itemization_type"] == "transaction"
    assert r["itemization_date"] == pd.Timestamp("2026-07-15")
    assert (
        r["itemization_minor"]
        + r["interest_since_minor"]
        + r["fees_since_minor"]
        - r["payments_since_minor"]
        == r["balance_minor"]
    )
    assert r["payments_since_minor"] == 3_000
    assert r["due_date"] == pd.Timestamp("2026-07-01")
    assert r["first_delinquency_date"] == pd.Timestamp("2026-07-02")
    assert (r["last_payment_date"], r["last_payment_minor"]) == (pd.Timestamp("2026-09-01"), 3000)
    assert r["dispute"] == "resolved" and r["disputed_minor"] == 2_500
    assert r["cease_communication"] and r["vulnerable"] and not r["attorney_represented"]
    assert r["email_consent"] and r["sms_opt_out"] and not r["call_opt_out"]
    assert r["promise_broken"] and not r["payment_plan"]
    assert r["inconvenient_times"] == "Mon,Tue,Wed,Thu,Fri 09:00-17:00; Sun 00:00-24:00"
    assert r["days_past_due"] == 145 and r["original_creditor"] == "Test"
