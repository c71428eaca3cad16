"""The clock guard: the date- and hour-sensitive tests (marker ``clock``) pass whatever the product
clock says.

Each instant runs those tests in their own pytest process with ``DUNNING_NOW`` set from the start,
as if the suite had been started then: a test that pins its business date and its clock is not
moved by it, and one that reads "now" without pinning (or product code that reads a clock other
than ``dunning.clock``) sees a day that is not the one it assumed.  The clock is moved through the
product's seam, never the machine's: the S3 server would refuse signatures from a moved clock.

The instants are ones that have broken schedulers before.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

INSTANTS = {
    # Saturday evening in New York, Sunday in Europe and Asia: a weekend about a year on.
    "sunday-0230utc": "2027-12-05T02:30:00Z",
    # US daylight saving starts that morning; 19:50 in New York, already Monday in Asia.
    "us-dst-day-2350utc": "2027-03-14T23:50:00Z",
    "leap-day-noon": "2028-02-29T12:00:00Z",
    # New Year's Eve in the Americas, New Year's Day from London eastwards.
    "new-years-eve-2359utc": "2027-12-31T23:59:00Z",
}


# Half the instants run beside the deployment tests (marker ``clock_guard``), half with the rest
# of the suite: the two pytest runs of scripts/test.sh then take about as long as each other.
CASES = [
    pytest.param(at, id=name, marks=[pytest.mark.clock_guard] if i % 2 else [])
    for i, (name, at) in enumerate(INSTANTS.items())
]


@pytest.mark.parametrize("instant", CASES)
def test_date_and_hour_sensitive_tests_pass_with_the_clock_moved_to(instant):
    env = {**os.environ, "DUNNING_NOW": instant}
    select = ["-m", "clock and not cluster", "-k", "not postgresql"]  # same clock reads on both
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *select, "-q", "-rfE", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, f"with DUNNING_NOW={instant}:\n{tail}"
