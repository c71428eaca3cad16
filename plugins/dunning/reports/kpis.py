"""Collections KPIs (reference: ../shared/domain/collections-reference.md, section 3).

Plain functions over numbers and frames, so finance can check each one against a hand
computation: DSO (standard and countback), best possible DSO, average days delinquent, CEI,
the roll-rate matrix between aging buckets and the cure rate.  Money in minor units; a ratio
whose denominator is zero is NaN ("cannot say"), never 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else float("nan")


def dso(ending_ar: float, credit_sales: float, days: int) -> float:
    """Standard DSO: ending total AR over the period's credit sales, times the days in it."""
    return _ratio(ending_ar, credit_sales) * days


def best_possible_dso(current_ar: float, credit_sales: float, days: int) -> float:
    """As DSO with only the not-yet-due (current) AR: what DSO would be if nobody paid late."""
    return _ratio(current_ar, credit_sales) * days


def average_days_delinquent(
    ending_ar: float, current_ar: float, credit_sales: float, days: int
) -> float:
    """DSO minus best possible DSO: the days customers add by paying late."""
    return dso(ending_ar, credit_sales, days) - best_possible_dso(current_ar, credit_sales, days)


def countback_dso(ending_ar: float, periods: Sequence[tuple[int, float]]) -> float:
    """Countback DSO: take the periods newest first as ``(days, credit sales)``; each period's
    sales that AR still covers counts all its days, the period where AR runs out counts the
    covered fraction.  Robust to a sales swing that standard DSO would read as a collections
    change.  AR beyond all given sales counts every given day (the history is too short)."""
    left, total = float(ending_ar), 0.0
    for days, sales in periods:
        if left <= 0:
            break
        if sales <= 0:
            total += days
            continue
        used = min(left, sales)
        total += days * used / sales
        left -= used
    return total


def cei(
    beginning_ar: float, credit_sales: float, ending_total_ar: float, ending_current_ar: float,
    months: int = 1,
) -> float:  # fmt: skip
    """Collection effectiveness index, in percent (Credit Research Foundation): what was
    collected over what could have been, with sales spread over the ``months`` of the period."""
    available = beginning_ar + credit_sales / months
    return _ratio(available - ending_total_ar, available - ending_current_ar) * 100


def roll_rates(before: pd.DataFrame, after: pd.DataFrame, buckets: Sequence[str]) -> pd.DataFrame:
    """Share of the balance in each bucket at the earlier date found in each bucket at the
    later one (rows: from, columns: to; a ``paid`` column for debtors gone or with nothing
    open).  Frames: ``debtor_id``, ``bucket``, ``open_minor`` (one row per debtor, as the
    ledger's ``debtor_buckets``).  Balance-weighted, from the earlier balance."""
    moved = before[["debtor_id", "bucket", "open_minor"]].merge(
        after[["debtor_id", "bucket", "open_minor"]],
        on="debtor_id",
        how="left",
        suffixes=("", "_after"),
    )
    gone = moved["bucket_after"].isna() | (moved["open_minor_after"].fillna(0) <= 0)
    moved["to"] = moved["bucket_after"].where(~gone, "paid")
    table = moved.pivot_table(
        index="bucket", columns="to", values="open_minor", aggfunc="sum", fill_value=0
    )
    table = table.reindex(index=list(buckets), columns=[*buckets, "paid"], fill_value=0)
    totals = table.sum(axis=1).replace(0, np.nan)
    return table.div(totals, axis=0)


def cure_rate(before: pd.DataFrame, after: pd.DataFrame, current: str = "current") -> float:
    """Of the debtors delinquent (not ``current``) at the earlier date, the share that are
    current or paid up at the later one (counts, not money)."""
    late = before[before["bucket"] != current]
    later = late[["debtor_id"]].merge(after[["debtor_id", "bucket", "open_minor"]], how="left")
    cured = later["bucket"].isna() | (later["bucket"] == current) | (later["open_minor"] <= 0)
    return _ratio(cured.sum(), len(late))


def promise_kept_rate(instalments: pd.DataFrame) -> float:
    """Kept instalments over those decided (kept or broken); pending ones are not yet a fact.
    ``instalments``: the ledger's ``instalments`` rows of the period (``status``)."""
    decided = instalments["status"].isin(["kept", "broken"])
    return _ratio((instalments["status"] == "kept").sum(), decided.sum())


def liquidation_by_vintage(placements: pd.DataFrame, payments: pd.DataFrame) -> pd.DataFrame:
    """Per placement month (vintage): money placed, collected by the agencies since (net of
    reversals), and the liquidation rate (collected / placed).  Frames: the ledger's
    ``placements`` (``account_ref``, ``placed_on``, ``balance_minor``) and ``agency_payments``
    (``account_ref``, ``amount_minor``)."""
    collected = payments.groupby("account_ref")["amount_minor"].sum()
    frame = placements.assign(
        vintage=pd.to_datetime(placements["placed_on"]).dt.strftime("%Y-%m"),
        collected_minor=placements["account_ref"].map(collected).fillna(0).astype("int64"),
    )
    out = frame.groupby("vintage", as_index=False).agg(
        accounts=("account_ref", "size"),
        placed_minor=("balance_minor", "sum"),
        collected_minor=("collected_minor", "sum"),
    )
    out["liquidation_rate"] = out["collected_minor"] / out["placed_minor"].replace(0, np.nan)
    return out


def uplift(treated: pd.Series, control: pd.Series, confidence: float = 0.95) -> dict[str, float]:
    """Mean per-debtor recovery of an arm minus that of the holdout, with a Welch (unequal
    variances) normal-approximation interval.  Debtors are the randomised unit, so their rates
    are the observations; the interval is NaN with fewer than two debtors on either side."""
    from statistics import NormalDist

    n_t, n_c = len(treated), len(control)
    mean_t = float(treated.mean()) if n_t else float("nan")
    mean_c = float(control.mean()) if n_c else float("nan")
    diff = mean_t - mean_c
    if n_t < 2 or n_c < 2:
        low = high = float("nan")
    else:
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        se = float(np.sqrt(treated.var(ddof=1) / n_t + control.var(ddof=1) / n_c))
        low, high = diff - z * se, diff + z * se
    return {
        "debtors": n_t,
        "holdout_debtors": n_c,
        "rate": mean_t,
        "holdout_rate": mean_c,
        "uplift": diff,
        "ci_low": low,
        "ci_high": high,
    }
