"""What a run may do to the world outside the lake: one answer, asked by every side effect.

A run is ``live`` (its own business date, today), ``dry_run``, ``backfill`` (a past date asked
for), ``late`` (its date is over by the product clock: started late, a cleared old run) or
``forced`` (a backfill or late run told to act, with a reason).  Only ``live`` and ``forced``
send, place, publish payment pages, take in agency returns or instruct the card processor.
"""

from __future__ import annotations

from datetime import date

ACTING_MODES = ("live", "forced")


def run_mode(run: dict, today: date) -> str:
    """The run's mode on the day ``today`` (by the product clock, in the schedule's zone)."""
    if run.get("dry_run"):
        return "dry_run"
    if run.get("backfill"):
        past = "backfill"
    elif date.fromisoformat(run["as_of"]) < today:
        past = "late"
    else:
        return "live"
    return "forced" if run.get("force_send") else past


def acts(run: dict) -> bool:
    """Whether a task with a side effect may have it (the mode ``resolve_run`` fixed)."""
    return run.get("mode", "live") in ACTING_MODES
