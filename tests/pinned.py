"""The suite's business dates, pinned: no test depends on the day or hour it runs.

Every test that runs a day uses ``TODAY`` (or a date counted from it) and pins the product clock
to an instant of that day (``daily_env`` and ``pin_clock`` in ``conftest``).  The clock guard
(``test_clock_guard``) re-runs the date- and hour-sensitive tests with the product clock moved
to instants that have broken schedulers before; a test that forgot to pin fails there.
"""

from __future__ import annotations

from datetime import date

# A Monday, a working day in every country the generator uses (US Thanksgiving is on the 26th).
TODAY = date(2026, 11, 23)
