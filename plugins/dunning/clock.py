"""The product's one clock: every instant Dunning stamps or compares ("now") comes from here.

Business dates are ``as_of`` and never come from this clock; it only answers "what instant is
it?" -- when a message may go out, when a claim was taken, when a manifest or summary was
written.  Reading the machine's clock anywhere else is refused by the linter (ruff's banned-api
list in ``pyproject.toml``), so a replay or a test that pins this clock pins all of Dunning.

``DUNNING_NOW`` (an ISO 8601 instant; no offset means UTC) pins it: a replay of a past day, the
demo, and the test suite set it.  Production never does: the deployment files are checked for it,
and a pinned clock is said in every run's log.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:  # pandas is imported when a Timestamp is asked for, not at DAG parse time
    import pandas as pd

PIN = "DUNNING_NOW"


def pinned() -> datetime | None:
    """The pinned instant (aware, UTC), or None when the clock runs free (production)."""
    value = os.environ.get(PIN, "").strip()
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{PIN}={value!r} is not an ISO 8601 instant") from exc
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def utcnow() -> datetime:
    """Now, as an aware UTC ``datetime``: the pinned instant, else the machine's clock."""
    at = pinned()
    return at if at is not None else datetime.now(UTC)


def now() -> pd.Timestamp:
    """``utcnow()`` as a pandas Timestamp, for the frame-side comparisons."""
    import pandas as pd

    return pd.Timestamp(utcnow())


def today(zone: str) -> date:
    """The calendar date it is now in ``zone`` (IANA name): which business day is "today"."""
    return utcnow().astimezone(ZoneInfo(zone)).date()
