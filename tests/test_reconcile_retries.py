"""Card decline classification and the processor's retry schedule (dunning.reconcile.retries)."""

from __future__ import annotations

import pandas as pd

from dunning.config import Retries
from dunning.reconcile.retries import classify, next_banking_day, schedule


def _declines(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {
        "network": ["visa"] * n,
        "network_code": [""] * n,
        "advice_code": [""] * n,
        "decline_code": ["insufficient_funds"] * n,
        "charge_ref": [f"INV-{i}" for i in range(n)],
        "debtor_id": ["D1"] * n,
        "amount_minor": [1000] * n,
        "currency": ["USD"] * n,
        "failed_on": ["2026-11-20"] * n,
    }
    return classify(pd.DataFrame({**base, **columns}))


def test_visa_category_1_and_mastercard_do_not_retry_are_hard() -> None:
    d = _declines(
        network=["visa", "visa", "mastercard", "mastercard", "visa"],
        network_code=["43", "51", "", "", "54"],
        advice_code=["", "", "03", "02", ""],
        decline_code=["", "", "do_not_honor", "do_not_honor", ""],
    )
    assert d["category"].tolist() == ["hard", "soft", "hard", "soft", "update"]


def test_mastercard_retry_after_advice_sets_the_wait() -> None:
    d = _declines(network=["mastercard"], advice_code=["30"], decline_code=["insufficient_funds"])
    out = schedule(
        d, pd.DataFrame(columns=["charge_ref", "failed_on"]), pd.Series(["US"]), Retries()
    )
    assert out["retry_on"].item().isoformat() == "2026-11-30"  # 10 days, a Monday


def test_retries_land_on_banking_days() -> None:
    # 2026-12-25 is a Friday and a US holiday: the next banking day is Monday the 28th.
    days = next_banking_day(pd.Series(pd.to_datetime(["2026-12-25"])), pd.Series(["US"]))
    assert days.item().isoformat() == "2026-12-28"


def test_the_network_limit_stops_retries_and_asks_for_a_new_method() -> None:
    rules = Retries(limits={"visa": (2, 30), "other": (2, 30)})
    earlier = pd.DataFrame(
        {"charge_ref": ["INV-0", "INV-0"], "failed_on": ["2026-11-01", "2026-11-10"]}
    )
    out = schedule(_declines(network=["visa"]), earlier, pd.Series(["US"]), rules)
    assert out["attempt"].item() == 3
    assert out["action"].item() == "request_new_method" and pd.isna(out["retry_on"].item())
    assert "retry limit reached" in out["reason"].item()
