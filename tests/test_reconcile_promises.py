"""Promise and plan judgement (dunning.reconcile.promises): kept, broken, pending, and flags."""

from __future__ import annotations

from datetime import date

import pandas as pd

from dunning.reconcile.promises import check, debtor_flags, evaluate

COLUMNS = ["promise_id", "debtor_id", "kind", "created_on", "currency", "due_on", "amount", "seq"]


def _text(rows: list[tuple | list]) -> pd.DataFrame:
    """Promise rows as the reader hands them over: text cells with file and line."""
    text = pd.DataFrame(rows, columns=COLUMNS).astype(str)
    text["channel"], text["source"], text["source_file"] = "phone", "promises", "p.csv"
    text["source_row"] = range(2, len(text) + 2)
    return text


def _instalments(rows: list[tuple]) -> pd.DataFrame:
    clean, _quarantine = check(_text(rows), quarantine_empty())
    return clean


def quarantine_empty() -> pd.DataFrame:
    from dunning.quality import _empty_quarantine

    return _empty_quarantine()


def _paid(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["debtor_id", "currency", "booked_on", "amount_minor"])
    frame["booked_on"] = pd.to_datetime(frame["booked_on"])
    return frame


def test_a_plan_is_current_until_an_instalment_is_missed() -> None:
    plan = _instalments(
        [
            ("P", "D1", "plan", "2026-10-01", "USD", "2026-10-15", "100.00", 1),
            ("P", "D1", "plan", "2026-10-01", "USD", "2026-11-15", "100.00", 2),
            ("P", "D1", "plan", "2026-10-01", "USD", "2026-12-15", "100.00", 3),
        ]
    )
    paid = _paid([("D1", "USD", "2026-10-16", 10000), ("D1", "EUR", "2026-11-10", 10000)])
    # 2026-11-16: the second instalment is within its grace days.
    now = evaluate(plan, paid, date(2026, 11, 16), 2)
    assert now["status"].tolist() == ["kept", "pending", "pending"]
    assert debtor_flags(now, 2).set_index("debtor_id").loc["D1", "plan_current"]
    # 2026-11-18: grace over, money in another currency does not count: broken.
    later = evaluate(plan, paid, date(2026, 11, 18), 2)
    assert later["status"].tolist() == ["kept", "broken", "pending"]
    flags = debtor_flags(later, 2).set_index("debtor_id")
    assert not flags.loc["D1", "plan_current"]
    assert flags.loc["D1", "promise_broken_on"] == pd.Timestamp("2026-11-18")


def test_a_reversed_payment_does_not_keep_a_promise() -> None:
    promise = _instalments([("Q", "D2", "promise", "2026-11-01", "USD", "2026-11-10", "50.00", 1)])
    paid = _paid([("D2", "USD", "2026-11-05", 5000), ("D2", "USD", "2026-11-08", -5000)])
    assert evaluate(promise, paid, date(2026, 11, 20), 2)["status"].item() == "broken"


def test_bad_rows_are_quarantined_with_their_field() -> None:
    text = _text([["R", "D3", "maybe", "2026-11-01", "USD", "2026-13-01", "-5", "1"]])
    clean, quarantine = check(text, quarantine_empty())
    assert clean.empty
    assert set(quarantine["field"]) == {"kind", "due_on", "amount"}
