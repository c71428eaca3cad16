"""Who goes to an agency today, which agency, and who comes back.

An account is the debtor's overdue, undisputed balance in its main currency (the same row the
debtor view chases): the agency works the person, not single invoices.  Every account past its
segment's cut-off is either placed or listed with every exclusion that kept it home, so the
collections team can see why an old debt is still theirs.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from dunning.config import Agency, Config
from dunning.planning import unit_hash
from dunning.quality import isin

# Why a placed account comes back (recall file ``reason``), in the order they are checked: a
# legal state first (it decides what the agency must stop), then paid, then a person's request.
RECALL_REASONS = ("DISPUTE", "BANKRUPTCY", "DECEASED", "BREATHING_SPACE", "PAID", "REQUESTED")
# Always on, whatever ``cutoff.exclude`` says:
PLACED = "placed"  # with an agency already: never a second one at the same time (invariant 5)
NO_IDENTITY = (
    "no_identity"  # not in the day's debtor master: an agency cannot work a name-less file
)
MULTI_CURRENCY = "multi_currency"  # debts in several currencies: one account would leave some out
NO_AGENCY = "no_agency"  # no configured agency takes this segment, country or region


def _flag(frame: pd.DataFrame, column: str) -> pd.Series:
    """A boolean column that may be missing (an older view, no promises feed): absent is False."""
    if column not in frame:
        return pd.Series(False, index=frame.index)
    return frame[column].fillna(False).astype(bool)


def deceased_unrepresented(state: pd.DataFrame) -> pd.Series:
    """A deceased debtor's account may only be worked through a named estate representative."""
    return _flag(state, "deceased") & ~_flag(state, "estate_representative")


def select(
    view: pd.DataFrame,
    state: pd.DataFrame,
    placements: pd.DataFrame,
    cfg: Config,
    as_of: date,
) -> pd.DataFrame:
    """Every debtor past its cut-off, with ``exclusions`` (comma-joined, empty when none) and
    the ``agency`` it goes to when it has none.

    ``view``: the day's debtor view with ``segment``.  ``state``: compliance state by debtor
    (``compliance.debtor_state``).  ``placements``: the placement ledger (every row, any status).
    """
    cut = cfg.placement.cutoff
    days = view["segment"].map(cut.by_segment).fillna(cut.days_past_due).astype("int64")
    due = (view["max_days_past_due"] >= days) & (
        view["overdue_minor"] >= max(cut.min_balance_minor, 1)
    )
    frame = view.loc[due].assign(cutoff_days=days[due])
    st = state.reindex(frame["debtor_id"].to_numpy())
    st.index = frame.index
    reasons = {
        "dispute": st["dispute"].eq("pending") if "dispute" in st else _flag(st, "dispute"),
        "promise": _flag(frame, "promise_active"),
        "payment_plan": _flag(frame, "plan_current"),
        "bankruptcy": _flag(st, "bankruptcy"),
        "deceased": deceased_unrepresented(st),
        "breathing_space": _flag(st, "breathing_space"),
        "statute_barred": _statute_barred(frame, cut.statute_years, as_of),
        "cooling_off": _cooling_off(frame, placements, cfg.placement.cooling_days, as_of),
    }
    active = placements[placements["status"] == "active"]
    placed_on = pd.to_datetime(active["placed_on"])
    # With an agency from another day -- an earlier one, or a later one when an earlier date is
    # run after it (a replay, a forced run): one agency at a time either way.
    elsewhere = active[placed_on != pd.Timestamp(as_of)]
    today = active[placed_on == pd.Timestamp(as_of)].set_index("debtor_id")["agency"]
    blocking = [(name, reasons[name]) for name in cut.exclude]
    blocking.append((PLACED, isin(frame["debtor_id"], elsewhere["debtor_id"])))
    blocking.append((NO_IDENTITY, frame["kind"].isna()))
    others = frame.get("other_currency_items", pd.Series(0, index=frame.index))
    blocking.append((MULTI_CURRENCY, others.fillna(0) > 0))
    frame["exclusions"] = _join(frame.index, blocking)
    # a re-run of the date keeps what its first run placed, with the same agency
    frame["agency"] = frame["debtor_id"].map(today).fillna(allocate(frame, cfg.placement.agencies))
    free = frame["exclusions"] == ""
    frame.loc[free & frame["agency"].isna(), "exclusions"] = NO_AGENCY
    return frame.reset_index(drop=True)


def _join(index: pd.Index, masks: list[tuple[str, pd.Series]]) -> pd.Series:
    """Comma-joined names of the masks that hold, per row, without a Python loop over rows."""
    out = pd.Series("", index=index, dtype="object")
    for name, mask in masks:
        hit = mask.to_numpy(dtype=bool)
        out[hit] = np.where(out[hit] == "", name, out[hit] + "," + name)
    return out


def _statute_barred(frame: pd.DataFrame, years: dict[str, int], as_of: date) -> pd.Series:
    """The limitation period runs from the oldest unpaid due date, per the debtor's country;
    a country the config does not list is never barred here."""
    # the latest due date still inside the period, per country
    threshold = {c: pd.Timestamp(as_of) - pd.DateOffset(years=n) for c, n in years.items()}
    bound = pd.to_datetime(frame["country"].map(threshold))
    return (pd.to_datetime(frame["oldest_due_date"]) <= bound).fillna(False).astype(bool)


def _cooling_off(
    frame: pd.DataFrame, placements: pd.DataFrame, days: int, as_of: date
) -> pd.Series:
    """A returned or recalled account waits ``days`` before it may be placed again."""
    ended = placements[placements["status"] != "active"].dropna(subset=["ended_on"])
    if ended.empty:
        return pd.Series(False, index=frame.index)
    last = pd.to_datetime(ended["ended_on"]).groupby(ended["debtor_id"]).max()
    ended_on = pd.DatetimeIndex(last.reindex(frame["debtor_id"].to_numpy()))
    recent = (pd.Timestamp(as_of) - ended_on) < pd.Timedelta(days=days)
    return pd.Series(recent, index=frame.index).fillna(False).astype(bool)


def allocate(frame: pd.DataFrame, agencies: list[Agency]) -> pd.Series:
    """The agency each account goes to: among the agencies that take its segment, country and
    region, by weight, on a stable hash of the debtor -- a champion/challenger split that keeps
    a debtor with the same agency whenever the inputs are the same."""
    if not agencies or frame.empty:
        return pd.Series(pd.NA, index=frame.index, dtype="object")
    takes = np.ones((len(frame), len(agencies)), dtype=bool)
    for j, agency in enumerate(agencies):
        if agency.segments:
            takes[:, j] &= isin(frame["segment"], agency.segments).to_numpy()
        if agency.countries:
            takes[:, j] &= isin(frame["country"], agency.countries).to_numpy()
        if agency.regions:
            takes[:, j] &= isin(frame["region"].fillna(""), agency.regions).to_numpy()
    weights = takes * np.array([a.weight for a in agencies])
    total = weights.sum(axis=1)
    point = unit_hash(frame["debtor_id"], "placement").to_numpy() * total
    pick = (weights.cumsum(axis=1) <= point[:, None]).sum(axis=1)
    names = np.array([a.name for a in agencies] + [None], dtype=object)
    return pd.Series(np.where(total > 0, names[np.minimum(pick, len(agencies))], None), frame.index)


def missing_from_ar(active: pd.DataFrame, known: pd.Series) -> pd.DataFrame:
    """Active placements whose debtor has no invoice in the day's AR snapshot: held as placed
    and reported, for a person to look at, never recalled on that alone."""
    return active[~isin(active["debtor_id"], known)].reset_index(drop=True)


def recalls(
    active: pd.DataFrame,
    view: pd.DataFrame,
    state: pd.DataFrame,
    requests: pd.DataFrame,
    as_of: date,
    known: pd.Series,
) -> pd.DataFrame:
    """Active placements (placed before today) that must come back, with the first reason.

    A pending dispute (of the debtor, or of every invoice left: nothing undisputed is overdue
    but something is disputed), bankruptcy, death without a representative, a breathing-space
    moratorium (contact through agents must stop too), paid in full internally (nothing overdue
    left in the day's view), or a person's request (``placement_recall`` event on or after the
    placing day).  "Paid" needs the debtor in the day's AR snapshot (``known``) with nothing
    overdue once the money the ledger matched is taken off: a debtor missing from the AR
    altogether says nothing about the money (``missing_from_ar``).
    """
    earlier = active[pd.to_datetime(active["placed_on"]) < pd.Timestamp(as_of)]
    by_debtor = view.set_index("debtor_id")
    present = isin(earlier["debtor_id"], known)
    owed = earlier["debtor_id"].map(by_debtor["overdue_minor"]).fillna(0)
    disputed = earlier["debtor_id"].map(by_debtor["disputed_minor"]).fillna(0) > 0
    st = state.reindex(earlier["debtor_id"].to_numpy())
    st.index = earlier.index
    asked = requests.groupby("debtor_id")["effective_date"].max()
    asked_on = pd.to_datetime(earlier["debtor_id"].map(asked))
    pending = st["dispute"].eq("pending") if "dispute" in st else _flag(st, "dispute")
    checks = [
        pending | ((owed <= 0) & disputed),
        _flag(st, "bankruptcy"),
        deceased_unrepresented(st),
        _flag(st, "breathing_space"),
        present & (owed <= 0),
        (asked_on >= pd.to_datetime(earlier["placed_on"])).fillna(False),
    ]
    reason = np.select([c.to_numpy(dtype=bool) for c in checks], RECALL_REASONS, "")
    out = earlier.assign(reason=reason)
    return out[out["reason"] != ""].reset_index(drop=True)
