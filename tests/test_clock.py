"""The product clock: one seam for every instant, pinned by replays and tests, never in production."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime

import pytest

from dunning import clock
from tests.conftest import REPO


def test_a_free_clock_is_the_machines(monkeypatch):
    monkeypatch.delenv(clock.PIN, raising=False)
    before = time.time()
    at = clock.now()
    assert before - 1 <= at.timestamp() <= time.time() + 1
    assert str(at.tz) == "UTC" and clock.pinned() is None


@pytest.mark.parametrize(
    ("pin", "expected"),
    [
        ("2028-02-29T12:00:00Z", datetime(2028, 2, 29, 12, tzinfo=UTC)),
        ("2028-02-29T12:00:00", datetime(2028, 2, 29, 12, tzinfo=UTC)),  # no offset: UTC
        ("2027-03-14T19:50:00-04:00", datetime(2027, 3, 14, 23, 50, tzinfo=UTC)),
    ],
)
def test_a_pinned_clock_says_the_pinned_instant_in_utc(monkeypatch, pin, expected):
    monkeypatch.setenv(clock.PIN, pin)
    assert clock.utcnow() == expected and clock.utcnow().tzinfo == UTC
    assert clock.now().to_pydatetime() == expected and str(clock.now().tz) == "UTC"


def test_today_is_the_date_in_the_zone_asked_for(monkeypatch):
    monkeypatch.setenv(clock.PIN, "2026-12-31T23:59:00Z")
    assert clock.today("UTC") == date(2026, 12, 31)
    assert clock.today("America/New_York") == date(2026, 12, 31)
    assert clock.today("Asia/Dubai") == date(2027, 1, 1)  # already next year there


def test_a_pin_that_is_not_an_instant_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(clock.PIN, "yesterday")
    with pytest.raises(ValueError, match="DUNNING_NOW='yesterday'"):
        clock.now()


# Ways to read the machine's clock that the linter's banned-api list cannot see by name.
HIDDEN_CLOCK_READS = re.compile(
    r"""(Timestamp|to_datetime|datetime64)\(\s*["'](now|today)["']|time\.(localtime|gmtime)\(\)"""
)


def test_nothing_but_the_seam_reads_the_machines_clock():
    """The banned-api rules in pyproject.toml stop ``datetime.now()`` and friends; this catches
    the string forms (``pd.Timestamp("now")``) in the product, the DAGs and the tests."""
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for folder in ("plugins", "dags", "tests")
        for path in (REPO / folder).rglob("*.py")
        if path.name != "test_clock.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if HIDDEN_CLOCK_READS.search(line)
    ]
    assert found == []
