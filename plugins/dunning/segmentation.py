"""Segmentation: who we chase, and how hard, is decided per debtor -- not per invoice.

A debtor gets one reminder covering everything they owe, so the clean invoice snapshot is first
aged (days past due, aging bucket per item) and then folded into one row per debtor with the
features segment rules test (``schema.AGING_FEATURES`` and ``schema.DEBTOR_FEATURES``).  The
debtor's bucket is also kept per business date in the ledger, the raw data of roll and cure rates.

Everything is vectorized pandas/numpy: the daily snapshot is a million open items.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlalchemy as sa

from dunning import lake, ledger
from dunning.config import Aging, Config
from dunning.quality import empty_frame, read_snapshots
from dunning.schema import AGING_FEATURES, DEBTOR_FEATURES

# --- aging ---------------------------------------------------------------------------------------

DEBTOR_ATTRIBUTES: Final = (*DEBTOR_FEATURES, "timezones")
VIEW_COLUMNS: Final = (
    "debtor_id",
    "currency",
    *AGING_FEATURES,
    "oldest_due_date",
    *DEBTOR_ATTRIBUTES,
    "other_currency_items",
)
BUCKET_COLUMNS: Final = (
    "as_of",
    "debtor_id",
    "bucket",
    "currency",
    "open_minor",
    "overdue_minor",
    "max_days_past_due",
)
_NO_ITEM: Final = np.iinfo(np.int64).min  # "no chaseable invoice" before the max is taken


def bucket_labels(days: np.ndarray, aging: Aging) -> pd.Series:
    """Bounds are inclusive upper ends: 0 -> current, 1..30 -> 1-30, 31..60 -> 31-60, 121 -> 120+.

    ``searchsorted(side="left")`` gives exactly that: a value equal to a bound lands in the
    bucket that bound closes.
    """
    codes = np.searchsorted(np.asarray(aging.buckets, dtype=np.int64), days, side="left")
    return pd.Series(pd.Categorical.from_codes(codes, aging.labels())).astype("str")


def age_invoices(invoices: pd.DataFrame, as_of: date, aging: Aging) -> pd.DataFrame:
    """The invoices plus ``days_past_due`` (int64, negative before the due date) and ``bucket``.

    Days are calendar days from the due date to ``as_of``: an invoice due today is 0 days past
    due and still ``current``; it is 1 day past due tomorrow.
    """
    due = invoices["due_date"]
    if due.isna().any():
        raise ValueError("age_invoices needs a due_date on every row (validate quarantines these)")
    due_days = pd.to_datetime(due).to_numpy().astype("datetime64[D]")
    days = (np.datetime64(as_of, "D") - due_days).astype(np.int64)
    # assign, not copy(): under copy-on-write the input's columns are shared, not duplicated.
    return invoices.assign(days_past_due=days, bucket=bucket_labels(days, aging).to_numpy())


def debtor_view(
    aged: pd.DataFrame, debtors: pd.DataFrame, as_of: date, aging: Aging
) -> pd.DataFrame:
    """One row per debtor with open items (``VIEW_COLUMNS``): the debtor is the unit of contact.

    Open items are rows with ``open_minor != 0``.  Decisions, so a reminder never claims more
    than is owed and its figures all describe the same items:

    * ``open_minor`` nets everything open: invoices, not-yet-due ones and credit notes.
    * ``overdue_minor`` is the open amount of non-disputed invoices past due, less every open
      credit note (an unapplied credit is the debtor's money and would be set off), floored at
      0.  ``overdue_count``, ``max_days_past_due`` and ``weighted_days_past_due`` are about the
      invoices themselves and are not reduced by credits: a debtor whose overdue invoices are
      covered by credits shows ``overdue_count > 0`` with ``overdue_minor == 0``.
    * Disputed invoices are out of the chase: they count in ``disputed_minor``, ``open_minor``
      and ``invoice_count`` only.
    * ``max_days_past_due`` and ``oldest_due_date`` come from the oldest non-disputed invoice
      with a positive open amount, overdue or not (the cadence runs from it, pre-due nudges
      included), so ``days_to_oldest_due == max_days_past_due`` and is negative before the due
      date.  A debtor with nothing to chase (only credits or disputed invoices) has
      ``oldest_due_date`` NaT, 0 days and bucket ``current``: the features stay non-null for
      segment rules and the ledger, and ``overdue_minor == 0`` keeps them out of the chase.
    * ``weighted_days_past_due`` is the open-amount-weighted mean days past due of the overdue
      non-disputed invoices, 0 when there are none.
    * Multi-currency debtors: amounts in different currencies cannot be added without exchange
      rates (the ledger has none) and a reminder states one balance, so the row covers the
      currency with the largest open amount (in minor units; ties go to more items, then the
      currency code) and every figure in it is about that currency's items only.
      ``other_currency_items`` counts the open items left out (0 normally) so a rule or an
      operator can route those debtors to a person.

    Debtor attributes (``DEBTOR_FEATURES`` and ``timezones``) are a left join: a debtor missing
    from ``debtors`` keeps NA there rather than dropping out of the chase unnoticed.
    """
    open_minor_all = aged["open_minor"].fillna(0).to_numpy(dtype=np.int64)
    is_open = open_minor_all != 0
    items = aged.loc[is_open, ["debtor_id", "currency", "doc_type", "disputed"]]
    amount = open_minor_all[is_open]
    dpd = aged["days_past_due"].to_numpy(dtype=np.int64)[is_open]
    if items["debtor_id"].isna().any() or items["currency"].isna().any():
        raise ValueError("debtor_view needs debtor_id and currency on every open item")

    debtor_code, debtor_ids = pd.factorize(items["debtor_id"], sort=True)
    cur_code, currencies = pd.factorize(items["currency"], sort=True)
    n_debtors, n_cur = len(debtor_ids), max(len(currencies), 1)

    # The main currency of each debtor: largest open amount, then most items, then the code.
    pair = debtor_code.astype(np.int64) * n_cur + cur_code
    pairs = (
        pd.DataFrame({"pair": pair, "amount": amount})
        .groupby("pair", sort=True)["amount"]
        .agg(["sum", "size"])
        .reset_index()
    )
    pairs["debtor"], pairs["cur"] = np.divmod(pairs["pair"].to_numpy(), n_cur)
    main = pairs.sort_values(
        ["debtor", "sum", "size", "cur"], ascending=[True, False, False, True]
    ).drop_duplicates("debtor")
    main_cur = main["cur"].to_numpy()  # sorted by debtor, one per debtor code
    in_main = cur_code == main_cur[debtor_code]

    disputed = items["disputed"].fillna(False).to_numpy(dtype=bool)
    invoice = items["doc_type"].eq("invoice").fillna(False).to_numpy(dtype=bool)
    credit = items["doc_type"].eq("credit_note").fillna(False).to_numpy(dtype=bool)
    chase = invoice & ~disputed & (amount > 0)
    overdue = chase & (dpd > 0)
    zero = np.zeros_like(amount)

    per_item = pd.DataFrame(
        {
            "debtor": debtor_code[in_main],
            "open_minor": amount[in_main],
            "overdue_gross": np.where(overdue, amount, zero)[in_main],
            "credit_minor": np.where(credit, amount, zero)[in_main],
            "disputed_minor": np.where(invoice & disputed, amount, zero)[in_main],
            "invoice_count": invoice[in_main].astype(np.int64),
            "overdue_count": overdue[in_main].astype(np.int64),
            "weighted_sum": np.where(overdue, amount * dpd, zero)[in_main],
        }
    )
    sums = per_item.groupby("debtor", sort=True).sum()
    max_dpd = pd.Series(np.where(chase, dpd, _NO_ITEM)[in_main]).groupby(per_item["debtor"]).max()
    # Every debtor code has a main-currency item, so the groups are exactly 0..n-1 in order.
    gross = sums["overdue_gross"].to_numpy()
    has_chase = max_dpd.to_numpy() != _NO_ITEM
    days = np.where(has_chase, max_dpd.to_numpy(), 0).astype(np.int64)
    oldest = np.datetime64(as_of, "D") - days.astype("timedelta64[D]")
    view = pd.DataFrame(
        {
            "debtor_id": pd.Series(debtor_ids, dtype="str"),
            "currency": pd.Series(currencies[main_cur] if n_debtors else [], dtype="str"),
            "open_minor": sums["open_minor"].to_numpy(),
            "overdue_minor": np.maximum(gross + sums["credit_minor"].to_numpy(), 0),
            "disputed_minor": sums["disputed_minor"].to_numpy(),
            "invoice_count": sums["invoice_count"].to_numpy(),
            "overdue_count": sums["overdue_count"].to_numpy(),
            "max_days_past_due": days,
            "weighted_days_past_due": np.divide(
                sums["weighted_sum"].to_numpy(dtype=np.float64),
                gross,
                out=np.zeros(n_debtors, dtype=np.float64),
                where=gross > 0,
            ),
            "oldest_due_date": pd.Series(
                np.where(has_chase, oldest, np.datetime64("NaT")), dtype="datetime64[s]"
            ),
            "days_to_oldest_due": days.copy(),
            "bucket": bucket_labels(days, aging),
            "other_currency_items": np.bincount(debtor_code[~in_main], minlength=n_debtors).astype(
                np.int64
            ),
        }
    )
    attrs = _debtor_attributes(debtors).reindex(view["debtor_id"])
    for col in DEBTOR_ATTRIBUTES:
        view[col] = attrs[col].to_numpy()
    return view[list(VIEW_COLUMNS)]


def _debtor_attributes(debtors: pd.DataFrame) -> pd.DataFrame:
    """Attributes by debtor id; first row wins if two debtor sources both know a debtor."""
    if "debtor_id" not in debtors:
        return pd.DataFrame(
            {c: pd.Series(dtype="str") for c in DEBTOR_ATTRIBUTES},
            index=pd.Index([], dtype="str", name="debtor_id"),
        )
    frame = debtors.drop_duplicates("debtor_id").set_index("debtor_id")
    return pd.DataFrame(
        {
            c: frame[c].astype("str") if c in frame else pd.Series(pd.NA, index=frame.index)
            for c in DEBTOR_ATTRIBUTES
        },
        index=frame.index,
    ).astype("str")


def bucket_history(view: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """The rows of ledger table ``debtor_buckets`` for ``as_of``: roll and cure rates read them."""
    return view.assign(as_of=as_of)[list(BUCKET_COLUMNS)].reset_index(drop=True)


def aging_to_lake(
    cfg: Config,
    as_of: date,
    root: Any,
    validated: dict,
    engine: sa.Engine,
    reconciled: dict | None = None,
) -> dict:
    """Age the day's validated snapshot, write the debtor view to the lake, log the buckets.

    Reads the same clean snapshots the ledger load reads (``validated`` from
    ``quality.validate_to_lake``), so aging never sees a quarantined row.  Re-running a day
    overwrites the view and replaces that day's bucket rows.
    """
    invoices, debtors, _ = read_snapshots(root, validated)
    if invoices.empty:
        invoices = _empty_invoices()
    elif reconciled is not None:  # money AR has not applied yet lowers what we chase
        from dunning.reconcile import open_after_payments

        with engine.connect() as conn:
            invoices = open_after_payments(conn, as_of, cfg.payments.ar_cash_lag_days, invoices)
    view = debtor_view(age_invoices(invoices, as_of, cfg.aging), debtors, as_of, cfg.aging)
    if reconciled is not None:
        view = with_promise_flags(view, lake.read_parquet(root / reconciled["flags"]))
    key = lake.partition("segments", as_of) + "/debtor_view.parquet"
    lake.write_parquet(root / key, view)
    ledger.save_debtor_buckets(engine, as_of, bucket_history(view, as_of))
    counts = view["bucket"].value_counts()
    return {
        "debtor_view": key,
        "debtors": len(view),
        "by_bucket": {label: int(counts.get(label, 0)) for label in cfg.aging.labels()},
    }


def with_promise_flags(view: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """The promise and plan state per debtor (from reconciliation) on the debtor view, where
    the strategy's stop conditions and the broken-promise resume read it."""
    merged = view.drop(columns=[c for c in flags.columns if c != "debtor_id" and c in view])
    merged = merged.merge(flags, on="debtor_id", how="left")
    for column in ("promise_active", "plan_current"):
        merged[column] = merged[column].fillna(False).astype(bool)
    merged["promise_broken_on"] = pd.to_datetime(merged["promise_broken_on"])
    return merged


def _empty_invoices() -> pd.DataFrame:
    return empty_frame(
        ["debtor_id", "currency", "doc_type", "due_date", "open_minor", "disputed"],
        "str",
        due_date="datetime64[s]",
        open_minor="Int64",
        disputed="bool",
    )
