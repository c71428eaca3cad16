"""Payment feed parsers (dunning.reconcile.feeds): each format to the same lines, bad input named."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from dunning.config import PaymentFeed
from dunning.errors import SourceError
from dunning.reconcile import feeds

DATA = Path(__file__).parent / "data" / "payments"


class _Cfg:
    def __init__(self, base: Path):
        self.base = base

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.base / path


def _read(fmt: str, pattern: str, base: Path = DATA):
    feed = PaymentFeed(name="f", format=fmt, path=pattern)
    text, _ = feeds.read_feed(feed, _Cfg(base), date(2026, 11, 22))
    return feeds.typed(text, feed)


def test_every_format_gives_amounts_dates_and_references() -> None:
    camt, _ = _read("camt053", "camt053_2026-11-22.xml")
    assert camt["kind"].tolist() == ["payment", "payment", "payment", "reversal", "other"]
    assert camt["amount_minor"].tolist()[:2] == [35000, 10000]
    assert camt.loc[0, "payer_name"] == "ACME TRADING LTD"
    assert camt.loc[3, "original_id"] == "E2E-GOLF-60"
    mt940, _ = _read("mt940", "*.sta")
    assert mt940["reference"].tolist()[0] == "INV-0001001 INV-0001002"
    assert mt940["external_id"].tolist()[1] == ""  # NONREF is no reference
    bai2, _ = _read("bai2", "*.bai")
    assert bai2["amount_minor"].tolist() == [40000, 8000]
    assert bai2.loc[0, "payer_name"] == "DELTA CORP"
    cards, quarantine = _read("processor_csv", "processor_*.csv")
    assert cards["kind"].tolist() == ["payment", "refund", "payment", "decline", "decline"]
    assert quarantine[["source_row", "field", "reason"]].values.tolist() == [
        [7, "booked_on", "BAD_DATE"]
    ]


def test_the_same_file_twice_gives_the_same_line_ids(tmp_path: Path) -> None:
    first, _ = _read("camt053", "camt053_2026-11-22.xml")
    again, _ = _read("camt053", "camt053_2026-11-22.xml")
    assert first["line_id"].tolist() == again["line_id"].tolist()
    assert first["line_id"].is_unique


def test_a_broken_statement_stops_the_run_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "camt053_bad.xml").write_text("<Document><BkToCstmrStmt>", encoding="utf-8")
    with pytest.raises(SourceError, match=r"camt053_bad\.xml"):
        _read("camt053", "camt053_*.xml", tmp_path)
    bad = (DATA / "bai2_2026-11-22.bai").read_text().replace("49,1088000", "49,1088001")
    (tmp_path / "x.bai").write_text(bad, encoding="utf-8")
    with pytest.raises(SourceError, match=r"x\.bai.*control total"):
        _read("bai2", "*.bai", tmp_path)
