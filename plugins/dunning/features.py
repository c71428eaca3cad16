"""Behaviour features of each debtor, computed point in time from the ledger's history.

Why point in time: the risk model is trained on past snapshot dates.  A feature that peeks at a
payment made after the snapshot would make the backtest look better than the model will ever be,
so every fact used for ``as_of`` is dated strictly before it: invoices issued before ``as_of``,
paid dates, payments, contacts and events before ``as_of``.  Later facts are filtered out in SQL
(they are not even read) and again in pandas when one loaded window serves several dates.

Definitions (``t`` = ``as_of``; "the year" = the 365 days before ``t``; only ``doc_type=invoice``
rows, credit notes are not debts):

===================================  ==========================================================
feature                              definition
===================================  ==========================================================
avg_days_late                        mean of ``paid_date - due_date`` (days, negative = early)
                                     over invoices paid in the year
late_trend                           mean lateness of invoices paid in the last 90 days minus
                                     that of the 275 days before; 0 unless both windows have
                                     payments (positive = getting later)
share_paid_after_first_reminder      of invoices paid in the year, the share paid within 14 days
                                     after the first contact on or after their due date (contacts
                                     are per debtor, so "about them" = the first one after due)
partial_payment_share                of the debtor's payments in the year, the share that equal
                                     no invoice amount of theirs and are below their largest
                                     invoice: part payments.  (The history export only dates
                                     full settlement, so partial payments are seen in payments.)
promises_kept / promises_broken      call outcomes ``promise_to_pay`` in the year whose 14-day
                                     window has closed, kept when a payment arrived within 14
                                     days.  The ledger has no promises table yet; when it does,
                                     this should read it instead of call outcomes.
disputes_12m                         ``dispute_opened`` compliance events in the year
response_rate_<channel>              of the contacts on that channel in the year whose 7-day
                                     window has closed, the share followed by a payment from the
                                     debtor within 7 days.  Payments, not outcomes like
                                     ``clicked`` or ``promise_to_pay``: money is the response that
                                     matters and outcomes are recorded unevenly across channels.
tenure_days                          days since ``debtors.customer_since`` (if known and before
                                     ``t``), else since the first invoice
balance_to_usual_invoice             gross amount of the invoices open at ``t`` divided by the
                                     median invoice amount of the year (gross: the export does
                                     not date partial payments, so netting them would leak)
===================================  ==========================================================

Debtors without history get 0 (a neutral value; ``tenure_days`` 0 tells the model they are new).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from dunning.ledger import (
    ComplianceEvent,
    ContactAttempt,
    Debtor,
    InvoiceHistory,
    Payment,
)
from dunning.schema import BEHAVIOUR_FEATURES, CHANNELS

YEAR = 365
RECENT = 90
REMINDER_WINDOW = 14
PROMISE_WINDOW = 14
RESPONSE_WINDOW = 7
AGING_COLUMNS = ("overdue_minor", "max_days_past_due", "overdue_count")
_DAY = np.timedelta64(1, "D")


@dataclass
class Facts:
    """History rows of one date window, debtors as integer codes into ``debtors`` (fast groupbys)."""

    debtors: pd.Index  # debtor_id per code
    invoices: pd.DataFrame  # code, issue, due, paid (NaT), amount, invoice (bool)
    payments: pd.DataFrame  # code, day, amount
    contacts: pd.DataFrame  # code, day, channel (index in CHANNELS), promise (bool)
    disputes: pd.DataFrame  # code, day
    first_issue: np.ndarray  # per code: first invoice issue date ever (NaT if none)
    customer_since: np.ndarray  # per code: debtors.customer_since (NaT if unknown)


def _raw(col: sa.ColumnElement) -> sa.ColumnElement:
    """Skip SQLAlchemy's per-row date parsing (SQLite text): Arrow parses the column at once."""
    return sa.type_coerce(col, sa.String).label(col.key)


def _fetch(conn: sa.Connection, query: sa.Select) -> dict[str, pa.Array]:
    """Rows to one Arrow array per column (types inferred in C: text, ints, dates).

    Why not ``pd.DataFrame(rows)``: pandas probes every Row object for attributes (a SQLAlchemy
    exception each) and keeps Python objects; at 5M rows that was most of the feature time.
    """
    enabled = gc.isenabled()
    gc.disable()  # millions of fresh tuples would trigger full collections again and again
    try:
        result = conn.execute(query)
        keys = list(result.keys())
        rows = result.fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in keys]
        del rows
        return {k: pa.array(v) for k, v in zip(keys, columns, strict=True)}
    finally:
        if enabled:
            gc.enable()


def _days(arr: pa.Array) -> np.ndarray:
    """ISO text (SQLite), dates or timestamps (PostgreSQL) to datetime64[s] at UTC midnight."""
    if pa.types.is_null(arr.type):
        return np.full(len(arr), np.datetime64("NaT"), dtype="datetime64[s]")
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = pc.strptime(pc.utf8_slice_codeunits(arr, 0, 10), "%Y-%m-%d", "s", error_is_null=True)
    elif pa.types.is_timestamp(arr.type) and arr.type.tz is not None:
        arr = arr.cast(pa.timestamp("s", tz="UTC")).cast(pa.timestamp("s"))
    out = arr.cast(pa.timestamp("s")).to_numpy(zero_copy_only=False)
    return out.astype("datetime64[D]").astype("datetime64[s]")


def _ints(arr: pa.Array) -> np.ndarray:
    return pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)


def load_facts(engine: sa.Engine, start: date, end: date) -> Facts:
    """Everything features for dates in ``[start, end]`` need, read once (training uses many dates).

    SQL keeps only facts dated before ``end`` and recent enough to matter at ``start``.
    """
    lo = start - timedelta(days=YEAR + 1)
    ih, pay, ca, ev = (
        t.__table__.c for t in (InvoiceHistory, Payment, ContactAttempt, ComplianceEvent)
    )
    end_ts = pd.Timestamp(end).tz_localize("UTC").to_pydatetime()
    lo_ts = pd.Timestamp(lo).tz_localize("UTC").to_pydatetime()
    with engine.connect() as conn:
        inv = _fetch(
            conn,
            sa.select(
                ih.debtor_id,
                _raw(ih.issue_date),
                _raw(ih.due_date),
                _raw(ih.paid_date),
                ih.amount_minor,
                (ih.doc_type == "invoice").label("invoice"),
            ).where(
                ih.issue_date < end,
                sa.or_(ih.issue_date >= lo, ih.paid_date.is_(None), ih.paid_date >= lo),
            ),
        )
        first = _fetch(
            conn,
            sa.select(ih.debtor_id, _raw(sa.func.min(ih.issue_date).label("first_issue")))
            .where(ih.issue_date < end)
            .group_by(ih.debtor_id),
        )
        pays = _fetch(
            conn,
            sa.select(pay.debtor_id, _raw(pay.paid_on), pay.amount_minor).where(
                pay.paid_on < end, pay.paid_on >= lo, pay.debtor_id.is_not(None)
            ),
        )
        cons = _fetch(
            conn,
            sa.select(
                ca.debtor_id,
                _raw(ca.at),
                ca.channel,
                (ca.outcome == "promise_to_pay").label("promise"),
            ).where(ca.at < end_ts, ca.at >= lo_ts),
        )
        disp = _fetch(
            conn,
            sa.select(ev.debtor_id, _raw(ev.effective_date)).where(
                ev.event == "dispute_opened", ev.effective_date < end, ev.effective_date >= lo
            ),
        )
        dc = Debtor.__table__.c
        since = _fetch(
            conn,
            sa.select(dc.debtor_id, _raw(dc.customer_since)).where(dc.customer_since.is_not(None)),
        )
    known = [a["debtor_id"].cast(pa.string()) for a in (inv, first, pays) if len(a["debtor_id"])]
    id_set = pc.unique(pa.chunked_array(known, type=pa.string()))
    id_set = pc.take(id_set, pc.sort_indices(id_set))
    ids = pd.Index(id_set.to_pylist(), dtype="str")

    def code(values: pa.Array) -> np.ndarray:
        found = pc.index_in(values.cast(pa.string()), value_set=id_set)
        return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype("int64")

    def flags(values: pa.Array) -> np.ndarray:
        return pc.fill_null(values.cast(pa.bool_()), False).to_numpy(zero_copy_only=False)

    invoices = pd.DataFrame(
        {
            "code": code(inv["debtor_id"]),
            "issue": _days(inv["issue_date"]),
            "due": _days(inv["due_date"]),
            "paid": _days(inv["paid_date"]),
            "amount": _ints(inv["amount_minor"]),
            "invoice": flags(inv["invoice"]),
        }
    )
    payments = pd.DataFrame(
        {
            "code": code(pays["debtor_id"]),
            "day": _days(pays["paid_on"]),
            "amount": _ints(pays["amount_minor"]),
        }
    )
    channel = pc.index_in(cons["channel"].cast(pa.string()), value_set=pa.array(CHANNELS))
    contacts = pd.DataFrame(
        {
            "code": code(cons["debtor_id"]),
            "day": _days(cons["at"]),
            "channel": pc.fill_null(channel, -1).to_numpy(zero_copy_only=False),
            "promise": flags(cons["promise"]),
        }
    )
    disputes = pd.DataFrame({"code": code(disp["debtor_id"]), "day": _days(disp["effective_date"])})
    first_issue = np.full(len(ids), np.datetime64("NaT"), dtype="datetime64[s]")
    fc = code(first["debtor_id"])
    first_issue[fc] = _days(first["first_issue"])
    customer_since = np.full(len(ids), np.datetime64("NaT"), dtype="datetime64[s]")
    sc = code(since["debtor_id"])
    hit = sc >= 0
    customer_since[sc[hit]] = _days(since["customer_since"])[hit]
    return Facts(
        debtors=ids,
        invoices=invoices,
        payments=payments[payments["code"] >= 0],
        contacts=contacts[contacts["code"] >= 0],
        disputes=disputes[disputes["code"] >= 0],
        first_issue=first_issue,
        customer_since=customer_since,
    )


def behaviour_features(
    engine: sa.Engine, as_of: date, debtor_ids: list[str] | pd.Index | None = None
) -> pd.DataFrame:
    """``debtor_id`` + ``schema.BEHAVIOUR_FEATURES`` as of ``as_of`` (facts before it only).

    Without ``debtor_ids``: every debtor with an invoice issued before ``as_of``.
    """
    return features_from_facts(load_facts(engine, as_of, as_of), as_of, debtor_ids)


def _mean(codes: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    count = np.bincount(codes, minlength=n).astype("float64")
    total = np.bincount(codes, weights=values.astype("float64"), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), 0.0), count


def _followed_by_payment(events: pd.DataFrame, payments: pd.DataFrame, days: int) -> np.ndarray:
    """Per event row (code, day): did the debtor pay on that day or within ``days`` after it."""
    if events.empty:
        return np.zeros(0, dtype=bool)
    left = events[["code", "day"]].assign(_row=np.arange(len(events))).sort_values("day")
    right = payments[["code", "day"]].rename(columns={"day": "pay_day"}).sort_values("pay_day")
    merged = pd.merge_asof(
        left,
        right,
        left_on="day",
        right_on="pay_day",
        by="code",
        direction="forward",
        tolerance=pd.Timedelta(days=days),
    )
    out = np.zeros(len(events), dtype=bool)
    out[merged["_row"].to_numpy()] = merged["pay_day"].notna().to_numpy()
    return out


def features_from_facts(
    facts: Facts, as_of: date, debtor_ids: list[str] | pd.Index | None = None
) -> pd.DataFrame:
    """The feature table at ``as_of`` from preloaded facts (see the module docstring)."""
    t = np.datetime64(as_of, "s")
    year_ago = t - YEAR * _DAY
    n = len(facts.debtors)
    out: dict[str, np.ndarray] = {}

    inv = facts.invoices
    inv = inv[(inv["issue"] < t) & inv["invoice"]]
    paid = inv[(inv["paid"] < t) & (inv["paid"] >= year_ago)]
    late = ((paid["paid"] - paid["due"]) / _DAY).to_numpy()
    paid_codes = paid["code"].to_numpy()
    out["avg_days_late"], _ = _mean(paid_codes, late, n)
    recent = (paid["paid"] >= t - RECENT * _DAY).to_numpy()
    recent_mean, recent_n = _mean(paid_codes[recent], late[recent], n)
    prior_mean, prior_n = _mean(paid_codes[~recent], late[~recent], n)
    out["late_trend"] = np.where((recent_n > 0) & (prior_n > 0), recent_mean - prior_mean, 0.0)

    contacts = facts.contacts[facts.contacts["day"] < t]
    payments = facts.payments[facts.payments["day"] < t]
    if len(paid) and len(contacts):
        left = paid[["code", "due", "paid"]].sort_values("due")
        right = contacts[["code", "day"]].sort_values("day")
        first = pd.merge_asof(
            left, right, left_on="due", right_on="day", by="code", direction="forward"
        )
        after = (first["day"] <= first["paid"]) & (
            first["paid"] <= first["day"] + REMINDER_WINDOW * _DAY
        )
        share, _ = _mean(first["code"].to_numpy(), after.to_numpy(), n)
        out["share_paid_after_first_reminder"] = share
    else:
        out["share_paid_after_first_reminder"] = np.zeros(n)

    pays_year = payments[payments["day"] >= year_ago]
    amounts = inv["amount"].to_numpy()
    keys = (inv["code"].to_numpy().astype("int64") << 40) | np.clip(amounts, 0, (1 << 40) - 1)
    pay_amount = pays_year["amount"].to_numpy()
    pay_code = pays_year["code"].to_numpy()
    pay_keys = (pay_code.astype("int64") << 40) | np.clip(pay_amount, 0, (1 << 40) - 1)
    largest = np.zeros(n, dtype="int64")
    np.maximum.at(largest, inv["code"].to_numpy(), amounts)
    partial = ~np.isin(pay_keys, keys) & (pay_amount < largest[pay_code])
    out["partial_payment_share"], _ = _mean(pay_code, partial, n)

    closed = t - PROMISE_WINDOW * _DAY
    promises = contacts[
        contacts["promise"] & (contacts["day"] >= year_ago) & (contacts["day"] < closed)
    ]
    kept = _followed_by_payment(promises, payments, PROMISE_WINDOW)
    codes = promises["code"].to_numpy()
    out["promises_kept"] = np.bincount(codes[kept], minlength=n).astype("float64")
    out["promises_broken"] = np.bincount(codes[~kept], minlength=n).astype("float64")

    disputes = facts.disputes
    disputes = disputes[(disputes["day"] < t) & (disputes["day"] >= year_ago)]
    out["disputes_12m"] = np.bincount(disputes["code"].to_numpy(), minlength=n).astype("float64")

    window = contacts[
        (contacts["day"] >= year_ago) & (contacts["day"] < t - RESPONSE_WINDOW * _DAY)
    ]
    responded = _followed_by_payment(window, payments, RESPONSE_WINDOW)
    wc, wch = window["code"].to_numpy(), window["channel"].to_numpy()
    for i, channel in enumerate(CHANNELS):
        on = wch == i
        out[f"response_rate_{channel}"], _ = _mean(wc[on], responded[on], n)

    since = facts.customer_since.copy()
    unknown = np.isnat(since) | (since >= t)
    since[unknown] = facts.first_issue[unknown]
    tenure = (t - since) / _DAY
    out["tenure_days"] = np.where(np.isnat(since) | (since >= t), 0.0, tenure)

    open_now = inv[inv["paid"].isna() | (inv["paid"] >= t)]
    balance = np.bincount(
        open_now["code"].to_numpy(), weights=open_now["amount"].to_numpy(), minlength=n
    )
    year_inv = inv[inv["issue"] >= year_ago]
    usual = year_inv.groupby("code")["amount"].median()
    usual_arr = np.zeros(n)
    usual_arr[usual.index.to_numpy()] = usual.to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        out["balance_to_usual_invoice"] = np.where(usual_arr > 0, balance / usual_arr, 0.0)

    frame = pd.DataFrame(out, index=facts.debtors)[list(BEHAVIOUR_FEATURES)].astype("float64")
    if debtor_ids is None:
        has_invoice = np.zeros(n, dtype=bool)
        has_invoice[inv["code"].to_numpy()] = True
        frame = frame[has_invoice]
    else:
        frame = frame.reindex(pd.Index(debtor_ids, dtype="str"), fill_value=0.0)
    frame.index.name = "debtor_id"
    return frame.reset_index()


def overdue_at(facts: Facts, as_of: date) -> pd.DataFrame:
    """Invoices overdue at ``as_of``: issued and due before it, not paid before it.

    Columns: code, debtor_id, due, paid (NaT = never), amount, days_past_due.  Gross amounts,
    for the same reason as ``balance_to_usual_invoice``.
    """
    t = np.datetime64(as_of, "s")
    inv = facts.invoices
    rows = inv[
        inv["invoice"]
        & (inv["issue"] < t)
        & (inv["due"] < t)
        & (inv["paid"].isna() | (inv["paid"] >= t))
        & (inv["amount"] > 0)
    ]
    return rows.assign(
        debtor_id=facts.debtors[rows["code"].to_numpy()],
        days_past_due=((t - rows["due"]) / _DAY).astype("int64"),
    )


def aging_features(overdue: pd.DataFrame) -> pd.DataFrame:
    """Per debtor: overdue_minor, max_days_past_due, overdue_count (the daily view's names)."""
    grouped = overdue.groupby("debtor_id", sort=True)
    return pd.DataFrame(
        {
            "overdue_minor": grouped["amount"].sum().astype("float64"),
            "max_days_past_due": grouped["days_past_due"].max().astype("float64"),
            "overdue_count": grouped.size().astype("float64"),
        }
    ).rename_axis("debtor_id")
