"""Promises to pay and payment plans: imported, tracked instalment by instalment, judged from
matched payments.

A promise is a plan with one instalment.  Instalment *k* is **kept** when the debtor's matched
payments from the promise's creation up to its due date plus the grace days cover the first
*k* instalments; **broken** when that day has passed without; **pending** before.  While a
promise or plan has nothing broken and something pending, reminders are held (the strategy's
``promise_to_pay`` / ``payment_plan_current`` stop conditions); the day one breaks, the
cadence resumes at the next step, with the strategy's ``on_broken_promise`` template.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from dunning import quality
from dunning.config import Config, HistoryQuery
from dunning.history import malformed_rows, read_export
from dunning.reconcile.feeds import checked_money
from dunning.sources import read_query

COLUMNS = ("promise_id", "debtor_id", "kind", "created_on", "currency", "due_on", "amount")
OPTIONAL = ("seq", "channel")
KINDS = frozenset({"promise", "plan"})
FLAG_COLUMNS = ("debtor_id", "promise_active", "plan_current", "promise_broken_on")


def read_promises(cfg: Config, as_of: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Instalment rows (one per instalment; a promise has one) and the quarantine."""
    spec = cfg.payments.promises
    if spec is None:
        return _empty(), quality._empty_quarantine()
    if isinstance(spec, HistoryQuery):
        text = read_query(cfg.resolve_sqlite(spec.url), spec.query, as_of, "promises", COLUMNS)
        text["source"] = "promises"
        for column in OPTIONAL:
            if column not in text:
                text[column] = ""
        malformed = quality._empty_quarantine()
    else:
        path = cfg.resolve(Path(spec))
        text, bad = read_export("promises", path, COLUMNS, OPTIONAL)
        malformed = malformed_rows("promises", path, bad)
    return check(text, malformed)


def check(text: pd.DataFrame, malformed: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    issues = quality._Issues(text)
    for column in ("promise_id", "debtor_id"):
        issues.add(text[column].str.strip() == "", column, quality.MISSING_FIELD, "required")
    kind = text["kind"].str.strip().str.lower()
    issues.add(~kind.isin(KINDS), "kind", quality.BAD_VALUE, "kind must be promise or plan")
    created = quality.parse_date(text["created_on"], "%Y-%m-%d")
    due = quality.parse_date(text["due_on"], "%Y-%m-%d")
    issues.add(created.isna(), "created_on", quality.BAD_DATE, "not a date (YYYY-MM-DD)")
    issues.add(due.isna(), "due_on", quality.BAD_DATE, "not a date (YYYY-MM-DD)")
    issues.add(due < created, "due_on", quality.DUE_BEFORE_ISSUE, "due before the promise was made")
    currency, minor = checked_money(issues, text)
    issues.add(minor.le(0), "amount", quality.NEGATIVE_AMOUNT, "must be positive")
    seq = quality.to_int(text["seq"].where(text["seq"].str.strip() != "", "1"))
    issues.add(seq.isna(), "seq", quality.BAD_VALUE, "not a whole number")
    out = pd.DataFrame(
        {
            "promise_id": text["promise_id"].str.strip(),
            "seq": seq.fillna(1).astype("int64"),
            "debtor_id": text["debtor_id"].str.strip(),
            "kind": kind,
            "channel": text["channel"].str.strip().replace("", None),
            "created_on": created,
            "currency": currency,
            "due_on": due,
            "amount_minor": minor.fillna(0).astype("int64"),
        }
    )
    dup = out.duplicated(["promise_id", "seq"], keep=False)
    issues.add(dup, "seq", quality.DUPLICATE_ID, "promise_id and seq repeated")
    out = out.drop(index=issues.bad_index())
    q = pd.concat([issues.records(), malformed], ignore_index=True)
    return out.reset_index(drop=True), q


def _empty() -> pd.DataFrame:
    columns = ("promise_id", "seq", "debtor_id", "kind", "channel", "created_on", "currency",
               "due_on", "amount_minor")  # fmt: skip
    return quality.empty_frame(
        columns, "str", seq="int64", channel="object", created_on="datetime64[s]",
        due_on="datetime64[s]", amount_minor="int64",
    )  # fmt: skip


def evaluate(
    instalments: pd.DataFrame, paid: pd.DataFrame, as_of: date, grace_days: int
) -> pd.DataFrame:
    """Each instalment with ``paid_minor`` (towards it) and ``status``.

    ``paid``: the debtors' matched money -- debtor_id, currency, booked_on, amount_minor
    (reversals negative).  Payments count from the promise's creation day.
    """
    if instalments.empty:
        return instalments.assign(
            paid_minor=pd.Series(dtype="int64"), status=pd.Series(dtype="str")
        )
    inst = instalments.sort_values(["promise_id", "seq"]).reset_index(drop=True)
    inst["cum_due"] = inst.groupby("promise_id")["amount_minor"].cumsum()
    inst["deadline"] = pd.to_datetime(inst["due_on"]) + pd.Timedelta(days=grace_days)
    by = ["debtor_id", "currency"]
    money = paid.merge(inst.drop_duplicates("promise_id")[[*by, "promise_id", "created_on"]], on=by)
    money = money[pd.to_datetime(money["booked_on"]) >= pd.to_datetime(money["created_on"])]
    day = pd.Timestamp(as_of)
    # Money counted at each instalment's deadline (or today, if that is earlier).
    horizon = inst["deadline"].where(inst["deadline"] < day, day)
    inst["paid_by_deadline"] = _paid_until(inst, money, inst["deadline"])
    paid_now = _paid_until(inst, money, horizon)
    before = inst["cum_due"] - inst["amount_minor"]
    inst["paid_minor"] = np.clip(paid_now - before, 0, inst["amount_minor"]).astype("int64")
    kept = inst["paid_by_deadline"] >= inst["cum_due"]
    passed = day > inst["deadline"]
    inst["status"] = np.where(kept & (passed | (paid_now >= inst["cum_due"])), "kept", "pending")
    inst.loc[passed & ~kept, "status"] = "broken"
    return inst.drop(columns=["cum_due", "deadline", "paid_by_deadline"])


def _paid_until(inst: pd.DataFrame, money: pd.DataFrame, until: pd.Series) -> pd.Series:
    """Per instalment row: the promise's money booked on or before ``until``."""
    if money.empty:
        return pd.Series(0, index=inst.index, dtype="int64")
    rows = inst[["promise_id"]].assign(until=until, row=inst.index)
    joined = rows.merge(money[["promise_id", "booked_on", "amount_minor"]], on="promise_id")
    joined = joined[pd.to_datetime(joined["booked_on"]) <= joined["until"]]
    total = joined.groupby("row")["amount_minor"].sum()
    return total.reindex(inst.index, fill_value=0).astype("int64")


def debtor_flags(evaluated: pd.DataFrame, grace_days: int) -> pd.DataFrame:
    """Per debtor with a promise or plan: is one current (hold reminders) or broken (resume)."""
    if evaluated.empty:
        return quality.empty_frame(FLAG_COLUMNS)
    per = evaluated.groupby("promise_id").agg(
        debtor_id=("debtor_id", "first"),
        kind=("kind", "first"),
        broken=("status", lambda s: (s == "broken").any()),
        pending=("status", lambda s: (s == "pending").any()),
    )
    broken_rows = evaluated[evaluated["status"] == "broken"]
    broken_on = (
        (pd.to_datetime(broken_rows["due_on"]) + pd.Timedelta(days=grace_days + 1))
        .groupby(broken_rows["promise_id"])
        .min()
    )
    per["broken_on"] = broken_on.reindex(per.index)
    current = ~per["broken"] & per["pending"]
    flags = pd.DataFrame(
        {
            "debtor_id": per["debtor_id"],
            "promise_active": current & (per["kind"] == "promise"),
            "plan_current": current & (per["kind"] == "plan"),
            "promise_broken_on": per["broken_on"],
        }
    )
    return (
        flags.groupby("debtor_id")
        .agg(
            promise_active=("promise_active", "any"),
            plan_current=("plan_current", "any"),
            promise_broken_on=("promise_broken_on", "max"),
        )
        .reset_index()
    )


def paid_frame(engine: sa.Engine, since: date) -> pd.DataFrame:
    """Matched money per debtor since ``since`` (allocations net of reversals, on account too)."""
    from dunning.ledger import Allocation

    a = Allocation.__table__.c
    with engine.connect() as conn:
        frame = pd.read_sql(
            sa.select(a.debtor_id, a.currency, a.booked_on, a.amount_minor).where(
                a.booked_on >= since
            ),
            conn,
        )
    frame["booked_on"] = pd.to_datetime(frame["booked_on"])
    return frame
