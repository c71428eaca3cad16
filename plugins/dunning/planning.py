"""Decide who is due what today: segment, strategy step, channels, template, experiment arm.

Everything here is a pure function of the day's debtor view (aging, attributes, behaviour,
scores), the contacts that already happened and the config, so re-running a business date gives
the same plan, row for row.  Each planned contact carries a deterministic key (debtor, strategy
step, channel, business date): the ledger's unique constraint on it is what later makes sending
exactly-once.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import holidays
import numpy as np
import pandas as pd
import sqlalchemy as sa

from dunning import lake
from dunning.config import BROKEN_PROMISE_CHANNELS, Config, Experiment, Segment, Strategy
from dunning.ledger import ContactAttempt, placed_debtors, sent_contacts
from dunning.quality import empty_frame, isin

PLAN_COLUMNS = (
    "contact_key",
    "as_of",
    "debtor_id",
    "segment",
    "strategy",
    "step",
    "step_index",
    "channel",
    "template",
    "tone",
    "experiment",
    "arm",
    "currency",
    "overdue_minor",
    "days_to_oldest_due",
)
HOLDOUT = "holdout"
_OPS = {
    "gt": lambda s, v: s > v,
    "ge": lambda s, v: s >= v,
    "lt": lambda s, v: s < v,
    "le": lambda s, v: s <= v,
    "eq": lambda s, v: s == v,
    "ne": lambda s, v: s != v,
    "in": lambda s, v: s.isin(v if isinstance(v, list) else [v]),
    "not_in": lambda s, v: ~s.isin(v if isinstance(v, list) else [v]),
}
_SYMBOLS = {
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
    "eq": "=",
    "ne": "!=",
    "in": "in",
    "not_in": "not in",
}


# --- segments ----------------------------------------------------------------------------------


def describe(segment: Segment) -> str:
    """The reason a debtor is in a segment, in words a collections manager reads in a report."""
    if not segment.when:
        return f"{segment.name}: no earlier segment matched"
    parts = [
        f"{feature} {_SYMBOLS[op]} {value}"
        for feature, tests in segment.when.items()
        for op, value in tests.items()
    ]
    return f"{segment.name}: " + " and ".join(parts)


def assign_segments(view: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Exactly one segment per debtor: the first (by priority) whose conditions all hold.

    A feature the day could not compute (NaN) fails its condition rather than matching by
    accident; the catch-all last segment (enforced by config validation) takes such debtors.
    """
    segment = pd.Series(pd.NA, index=view.index, dtype="str")
    reason = pd.Series(pd.NA, index=view.index, dtype="str")
    for seg in cfg.ordered_segments():
        mask = pd.Series(True, index=view.index)
        for feature, tests in seg.when.items():
            column = view[feature] if feature in view else pd.Series(np.nan, index=view.index)
            for op, value in tests.items():
                mask &= _OPS[op](column, value).fillna(False).astype(bool)
        take = mask & segment.isna()
        segment = segment.mask(take, seg.name)
        reason = reason.mask(take, describe(seg))
    strategies = {s.name: s.strategy for s in cfg.segments}
    return view.assign(segment=segment, segment_reason=reason, strategy=segment.map(strategies))


# --- experiments -------------------------------------------------------------------------------


def unit_hash(keys: pd.Series, salt: str) -> pd.Series:
    """A stable number in [0, 1) per key: same debtor, same experiment -> same arm, every day."""
    salted = salt + ":" + keys.astype("str")
    hashed = pd.util.hash_pandas_object(salted, index=False).to_numpy()
    return pd.Series((hashed >> np.uint64(11)) / float(1 << 53), index=keys.index)


def assign_arms(planned: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Arm per debtor for the first experiment covering its segment; holdout first, then arms
    by weight.  Debtors outside every experiment get arm "" (business as usual)."""
    experiment = pd.Series("", index=planned.index, dtype="str")
    arm = pd.Series("", index=planned.index, dtype="str")
    for exp in cfg.experiments:
        covered = _covered(planned, exp, cfg) & (experiment == "")
        u = unit_hash(planned["debtor_id"], exp.name)
        chosen = pd.Series(HOLDOUT, index=planned.index, dtype="str")
        weights = np.array([a.weight for a in exp.arms], dtype=float)
        bounds = exp.holdout_share + (1 - exp.holdout_share) * np.cumsum(weights) / weights.sum()
        lower = exp.holdout_share
        for a, upper in zip(exp.arms, bounds, strict=True):
            chosen = chosen.mask((u >= lower) & (u < upper), a.name)
            lower = upper
        experiment = experiment.mask(covered, exp.name)
        arm = arm.mask(covered, chosen)
    return planned.assign(experiment=experiment, arm=arm)


def _covered(frame: pd.DataFrame, exp: Experiment, cfg: Config) -> pd.Series:
    names = exp.segments or [s.name for s in cfg.segments if s.strategy]
    return frame["segment"].isin(names)


# --- cadence -----------------------------------------------------------------------------------


_HOLIDAY_COUNTRIES = frozenset(holidays.list_supported_countries())


@lru_cache(maxsize=512)
def day_off(country: str, day: date) -> bool:
    """Weekend or public holiday in the debtor's country (its own weekend: Fri-Sat in SA)."""
    if country not in _HOLIDAY_COUNTRIES:  # no calendar: Saturday and Sunday, no holidays
        return day.weekday() >= 5
    cal = holidays.country_holidays(country, years=day.year)
    return day.weekday() in cal.weekend or day in cal


def days_off(countries: pd.Series, day: date) -> pd.Series:
    """Vectorized over debtors: one calendar lookup per distinct country."""
    lookup = {c: day_off(c, day) for c in countries.dropna().unique()}
    return countries.map(lookup).fillna(day.weekday() >= 5).astype(bool)


def steps_done(contacts: pd.DataFrame, view: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Per debtor: the last strategy step that happened in the current delinquency cycle and the
    time of the last contact of any kind (for the minimum gap).

    ``contacts`` has debtor_id, at (UTC), template.  A step happened when a contact used its
    template (or the broken-promise template in its place) after the cycle began (the oldest open due date plus the strategy's first offset),
    so a debtor who paid and fell behind again starts the cadence afresh.
    """
    out = pd.DataFrame(index=view.index)
    out["last_step"] = -1
    out["last_contact"] = pd.NaT
    if contacts.empty or "strategy" not in view:
        return out
    c = contacts.merge(
        view[["debtor_id", "strategy", "oldest_due_date"]].reset_index(), on="debtor_id"
    )
    c["at_day"] = pd.to_datetime(c["at"], utc=True).dt.tz_localize(None).dt.normalize()
    last_contact = c.groupby("index")["at_day"].max()
    out.loc[last_contact.index, "last_contact"] = last_contact
    for name, strategy in cfg.strategies.items():
        index = {s.template: i for i, s in enumerate(strategy.steps)}
        rows = c[c["strategy"] == name]
        start = rows["oldest_due_date"] + pd.to_timedelta(strategy.steps[0].offset_days, "D")
        rows = rows[rows["at_day"] >= start]
        steps = rows[rows["template"].isin(index)]
        done = steps["template"].map(index).groupby(steps["index"]).max()
        out.loc[done.index, "last_step"] = done.astype(int)
        broken = rows[rows["template"] == strategy.on_broken_promise]
        if len(broken):
            # A broken-promise message stood in for the step after the last one (one per day,
            # whatever the channels): count the days it was sent after that step.
            after = steps.groupby("index")["at_day"].max()
            last = broken["index"].map(after.to_dict())
            later = broken[last.isna() | (broken["at_day"] > last)]
            extra = later.groupby("index")["at_day"].nunique()
            out.loc[extra.index, "last_step"] = out.loc[extra.index, "last_step"] + extra
    return out


def plan_contacts(
    view: pd.DataFrame, cfg: Config, as_of: date, contacts: pd.DataFrame
) -> pd.DataFrame:
    """The contacts due today, one row per debtor and channel (see PLAN_COLUMNS).

    A debtor gets the step after the last one that happened, once that step's day has come
    (offsets count from the oldest open due date; an arm may move them), never sooner than the
    strategy's minimum gap after the last contact, and on business days only when the strategy
    says so.  Pre-due nudges whose day has passed are skipped, not sent late.  Stop conditions
    (paid, dispute, promise, plan, placed) take the debtor out before anything else.
    """
    segmented = view if "segment" in view else assign_segments(view, cfg)
    frame = assign_arms(segmented, cfg)
    frame = frame[frame["strategy"].notna() & frame["oldest_due_date"].notna()]
    frame = frame[~_stopped(frame, cfg)]
    if "placed" in frame:  # with an agency: never our reminders too, whatever stop_when says
        frame = frame[~frame["placed"].fillna(False).astype(bool)]
    done = steps_done(contacts, frame, cfg)
    plans = [
        _plan_strategy(frame[frame["strategy"] == name], done, name, strategy, cfg, as_of)
        for name, strategy in cfg.strategies.items()
    ]
    plans = [p for p in plans if len(p)]
    if not plans:
        return empty_frame(PLAN_COLUMNS)
    plan = pd.concat(plans, ignore_index=True)
    return plan.sort_values(["debtor_id", "channel"], ignore_index=True)[list(PLAN_COLUMNS)]


def _stopped(frame: pd.DataFrame, cfg: Config) -> pd.Series:
    """Stop conditions the ledger knows about; columns that don't exist yet never stop anyone."""
    flags = {
        "paid": frame["overdue_minor"].le(0) & frame["days_to_oldest_due"].gt(0),
        "promise_to_pay": frame.get("promise_active", pd.Series(False, index=frame.index)),
        "payment_plan_current": frame.get("plan_current", pd.Series(False, index=frame.index)),
        "dispute": frame.get("dispute_open", pd.Series(False, index=frame.index)),
        "placed": frame.get("placed", pd.Series(False, index=frame.index)),
    }
    stop = pd.Series(False, index=frame.index)
    for name, strategy in cfg.strategies.items():
        of_strategy = frame["strategy"] == name
        for condition in strategy.stop_when:
            stop |= of_strategy & flags[condition].fillna(False).astype(bool)
    return stop


def _plan_strategy(
    frame: pd.DataFrame,
    done: pd.DataFrame,
    name: str,
    strategy: Strategy,
    cfg: Config,
    as_of: date,
) -> pd.DataFrame:
    if frame.empty:
        return frame
    days = frame["days_to_oldest_due"].astype("int64")
    next_step = done.loc[frame.index, "last_step"] + 1
    # Pre-due steps whose window has passed are skipped: nobody wants a "due soon" after the due date.
    pre_due = sum(1 for s in strategy.steps if s.offset_days < 0)
    next_step = next_step.where(~(days > 0) | (next_step >= pre_due), pre_due)
    in_range = next_step < len(strategy.steps)
    step_idx = next_step.clip(upper=len(strategy.steps) - 1)
    offsets = np.array([s.offset_days for s in strategy.steps])[step_idx.to_numpy()]
    offsets = pd.Series(offsets, index=frame.index)
    templates = pd.Series(
        np.array([s.template for s in strategy.steps], dtype=object)[step_idx.to_numpy()],
        index=frame.index,
    )
    for exp in cfg.experiments:
        for arm in exp.arms:
            mine = (frame["experiment"] == exp.name) & (frame["arm"] == arm.name)
            for i, step in enumerate(strategy.steps):
                at_step = mine & (step_idx == i)
                if step.name in arm.offsets:
                    offsets = offsets.mask(at_step, arm.offsets[step.name])
                if step.name in arm.templates:
                    templates = templates.mask(at_step, arm.templates[step.name])
    last = done.loc[frame.index, "last_contact"]
    gap_ok = last.isna() | (
        (pd.Timestamp(as_of) - pd.to_datetime(last)).dt.days >= strategy.min_gap_days
    )
    # A promise or plan broken since the last contact resumes the cadence at once.
    broken_on = pd.to_datetime(frame.get("promise_broken_on", pd.Series(pd.NaT, index=frame.index)))
    resumed = broken_on.notna() & (last.isna() | (pd.to_datetime(last) < broken_on))
    due = in_range & ((days >= offsets) | resumed) & gap_ok & (frame["arm"] != HOLDOUT)
    if strategy.business_days:
        due &= ~days_off(frame["country"], as_of)
    chosen = frame[due].assign(
        step_index=step_idx[due], template=templates[due], strategy=name, as_of=as_of.isoformat()
    )
    idx = chosen["step_index"].to_numpy()
    for column, values in (
        ("step", [s.name for s in strategy.steps]),
        ("tone", [s.tone for s in strategy.steps]),
        ("channel", [s.channels for s in strategy.steps]),
    ):
        table = np.empty(len(values), dtype=object)
        table[:] = values
        chosen[column] = table[idx]
    rows = chosen.explode("channel")
    if strategy.on_broken_promise:
        swap = resumed[rows.index] & rows["channel"].isin(BROKEN_PROMISE_CHANNELS)
        rows["template"] = rows["template"].mask(swap.to_numpy(), strategy.on_broken_promise)
    rows["contact_key"] = (
        rows["debtor_id"]
        + ":"
        + name
        + ":"
        + rows["step"]
        + ":"
        + rows["channel"]
        + ":"
        + as_of.isoformat()
    )
    return rows


# --- stage ---------------------------------------------------------------------------------------


def recent_contacts(
    engine: sa.Engine, as_of: date, days: int = 400, root: Any | None = None
) -> pd.DataFrame:
    """The latest contact per debtor and template before ``as_of``: all the cadence needs (did a
    step happen this cycle, when was the last contact), aggregated in the database -- or, with
    the lake ``root``, from the history mirror the day's history load wrote when it still
    matches the ledger: grouping millions of contacts in SQLite took most of the plan stage."""
    from dunning import features

    start = pd.Timestamp(as_of - timedelta(days=days), tz="UTC").to_pydatetime()
    end = pd.Timestamp(as_of, tz="UTC").to_pydatetime()
    with engine.connect() as conn:
        ours = sent_contacts(conn, start, end)[["debtor_id", "template", "at"]]
        history = (
            features.latest_contacts(engine, root, as_of, start, end) if root is not None else None
        )
        if history is None:
            table = ContactAttempt.__table__
            query = (
                sa.select(table.c.debtor_id, table.c.template, sa.func.max(table.c.at).label("at"))
                .where(features.timestamp_window(table.c.at, start, end))
                .group_by(table.c.debtor_id, table.c.template)
            )
            history = pd.read_sql(query, conn)
    if ours.empty:
        return history
    history["at"] = pd.to_datetime(history["at"], utc=True)
    both = pd.concat([history, ours], ignore_index=True)
    return both.groupby(["debtor_id", "template"], as_index=False)["at"].max()


def score_to_lake(cfg: Config, as_of: date, root: Any, engine: sa.Engine, view_key: str) -> dict:
    """Behaviour features from the ledger's history and the risk score, joined to the view."""
    from dunning import features, risk

    view = lake.read_parquet(root / view_key)
    # root: the history mirror the day's history load wrote, not millions of ledger rows
    behaviour = features.behaviour_features(engine, as_of, pd.Index(view["debtor_id"]), root)
    frame = view.merge(behaviour, on="debtor_id", how="left")
    scores = risk.score(cfg, frame, root)
    scored = frame.merge(scores, on="debtor_id", how="left")
    key = lake.partition("segments", as_of) + "/scored_view.parquet"
    lake.write_parquet(root / key, scored)
    sources = scores["score_source"].value_counts().astype(int).to_dict() if len(scores) else {}
    return {"scored_view": key, "debtors": len(scored), "score_source": sources}


def plan_to_lake(cfg: Config, as_of: date, root: Any, engine: sa.Engine, view_key: str) -> dict:
    """Segment the day's debtors and plan their contacts; both go to the lake for compliance."""
    view = lake.read_parquet(root / view_key)
    # with an agency: the agency collects, our reminders stop (strategy stop condition "placed")
    view["placed"] = isin(view["debtor_id"], placed_debtors(engine, as_of))
    segmented = assign_arms(assign_segments(view, cfg), cfg)
    plan = plan_contacts(segmented, cfg, as_of, recent_contacts(engine, as_of, root=root))
    seg_key = lake.partition("segments", as_of) + "/segments.parquet"
    plan_key = lake.partition("plans", as_of) + "/planned_contacts.parquet"
    keep = ["debtor_id", "segment", "segment_reason", "strategy", "experiment", "arm"]
    lake.write_parquet(root / seg_key, segmented[[c for c in keep if c in segmented]])
    lake.write_parquet(root / plan_key, plan)
    return {
        "segments": seg_key,
        "plan": plan_key,
        "debtors_due": int(plan["debtor_id"].nunique()),
        "contacts_planned": len(plan),
        "by_segment": segmented["segment"].value_counts().astype(int).to_dict(),
        "by_channel": plan["channel"].value_counts().astype(int).to_dict(),
    }
