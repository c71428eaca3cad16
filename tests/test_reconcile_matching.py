"""Allocation arithmetic: each payment pays its own candidates, named ones first, then oldest."""

from __future__ import annotations

import pandas as pd

from dunning.reconcile.matching import allocate


def test_each_line_pays_named_items_first_then_oldest_and_never_more_than_it_has():
    # item_no is the allocation order of the book (oldest due date first).
    cands = pd.DataFrame(
        {
            "line_id": [7, 7, 7, 3, 3, 5],
            "rank": [1, 1, 0, 0, 0, 0],
            "item_no": [0, 1, 9, 4, 2, 6],
            "invoice_id": ["old", "older-2", "named", "b", "a", "c"],
            "open_minor": [300, 400, 500, 100, 250, 80],
            "avail": [1000.0, 1000.0, 1000.0, 300.0, 300.0, None],
        }
    )
    paid = allocate(cands)
    got = dict(zip(paid["invoice_id"], paid["amount_minor"], strict=True))
    # Line 7: the named invoice in full (500), then the oldest other (300), then 200 of the next.
    # Line 3: "a" (item 2) before "b" (item 4): 250 then the 50 left. Line 5: no rate, nothing.
    assert got == {"named": 500, "old": 300, "older-2": 200, "a": 250, "b": 50}
    assert list(paid["invoice_id"]) == ["a", "b", "named", "old", "older-2"]
    assert paid.groupby("line_id")["amount_minor"].sum().to_dict() == {3: 300, 7: 1000}
