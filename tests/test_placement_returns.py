"""What agencies send back, on SQLite and PostgreSQL: acknowledgements checked against what we
placed, payments with commission, closures; bad files rejected whole, bad rows quarantined."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from dunning.config import Config
from dunning.ledger import AgencyFile, AgencyPayment, PlacedAccount, bulk_insert
from dunning.placement import PLACEMENT_COLUMNS
from dunning.placement.returns import load_returns

AS_OF = date(2026, 11, 24)
FILE = "placements/agency=acme/as_of=2026-11-23/placements.csv"


@pytest.fixture
def setup(ledger_engine: sa.Engine, tmp_path: Path):
    inbox = tmp_path / "returns"
    inbox.mkdir()
    cfg = Config.model_validate(
        {
            "portfolio": {"name": "Test"},
            "sources": [{"name": "erp", "path": "x.csv", "columns": {}}],
            "placement": {
                "enabled": True,
                "agencies": [
                    {
                        "name": "acme",
                        "commission_rate": 0.25,
                        "returns": str(inbox),
                        "layout": {"fields": ["account_ref"]},
                    }
                ],
            },
            "source_file": tmp_path / "config.yaml",
        }
    )
    rows = pd.DataFrame(
        {
            "account_ref": ["D1-20261123", "D2-20261123"],
            "debtor_id": ["D1", "D2"],
            "agency": "acme",
            "segment": "all",
            "placed_on": date(2026, 11, 23),
            "currency": "USD",
            "balance_minor": [10_000, 20_000],
            "principal_minor": [10_000, 20_000],
            "interest_minor": 0,
            "fees_minor": 0,
            "days_past_due": 95,
            "file_key": FILE,
            "status": "active",
            "acknowledged_on": None,
            "collected_minor": 0,
            "commission_minor": 0,
            "ended_on": None,
            "end_reason": None,
            "recall_file_key": None,
        }
    )
    out = {
        "sha256": "0" * 64, "agency": "acme", "as_of": date(2026, 11, 23), "direction": "out",
        "kind": "placements", "name": FILE, "rows": 2, "total_minor": 30_000,
        "status": "published", "error": None, "recorded_at": datetime(2026, 11, 23, 16, 30, tzinfo=UTC),
    }  # fmt: skip
    with ledger_engine.begin() as conn:
        bulk_insert(conn, PlacedAccount.__table__, rows[PLACEMENT_COLUMNS])
        conn.execute(AgencyFile.__table__.insert(), [out])
    return cfg, ledger_engine, inbox


def placements(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.select(PlacedAccount.__table__), conn).set_index("debtor_id")


def write(inbox: Path, name: str, lines: list[str]) -> None:
    (inbox / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


ACK_HEAD = "record_type,placement_file,account_ref,balance_minor,rows"


def test_a_matching_acknowledgement_is_loaded_once(setup):
    cfg, engine, inbox = setup
    write(inbox, "ack_1.csv", [ACK_HEAD, f"D,{FILE},D1-20261123,10000,",
                               f"D,{FILE}.pgp,D2-20261123,20000,", "T,,,30000,2"])  # fmt: skip
    loaded = load_returns(cfg, engine, AS_OF)
    assert (loaded.files, loaded.acknowledged, loaded.rejected) == (1, 2, [])
    assert (placements(engine)["acknowledged_on"] == AS_OF).all()
    assert load_returns(cfg, engine, AS_OF).files == 0  # the same file again: nothing new


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (
            [f"D,{FILE},D1-20261123,10000,", f"D,{FILE},D2-20261123,20000,", "T,,,30001,2"],
            "ack_bad.csv row 4 (trailer) balance_minor: '30001' but the detail total is 30000",
        ),
        (
            [f"D,{FILE},D1-20261123,10000,", "T,,,10000,1"],
            f"ack_bad.csv row 2 balance_minor: acknowledges 1 accounts for 10000 but {FILE} "
            "had 2 for 30000",
        ),
        (
            [f"D,{FILE},D1-20261123,20000,", f"D,{FILE},D2-20261123,10000,", "T,,,30000,2"],
            "ack_bad.csv row 2 account_ref: 'D1-20261123' with balance 20000 is not an account "
            f"of {FILE}",
        ),
        (
            ["D,placements/elsewhere.csv,D1-20261123,10000,", "T,,,10000,1"],
            "ack_bad.csv row 2 placement_file: 'placements/elsewhere.csv' is not a file we "
            "placed with acme",
        ),
        (
            [f"D,{FILE},D1-20261123,10000,"],
            "ack_bad.csv: needs exactly one T trailer row, last",
        ),
    ],
)
def test_a_wrong_acknowledgement_is_rejected_whole_with_file_row_and_field(setup, lines, error):
    cfg, engine, inbox = setup
    write(inbox, "ack_bad.csv", [ACK_HEAD, *lines])
    loaded = load_returns(cfg, engine, AS_OF)
    assert loaded.files == 0 and [r["error"] for r in loaded.rejected] == [error]
    assert placements(engine)["acknowledged_on"].isna().all()
    with engine.connect() as conn:
        status = conn.execute(
            sa.select(AgencyFile.status, AgencyFile.error).where(AgencyFile.direction == "in")
        ).one()
    assert tuple(status) == ("rejected", error)


def test_agency_payments_carry_commission_and_a_paid_off_account_closes(setup):
    cfg, engine, inbox = setup
    write(
        inbox,
        "payments_1.csv",
        [
            "record_type,payment_ref,account_ref,paid_on,amount_minor,rows",
            "D,P1,D1-20261123,2026-11-23,6000,",
            "D,P2,D1-20261123,2026-11-24,4001,",
            "D,P3,D2-20261123,2026-11-24,5000,",
            "D,P4,D2-20261123,2026-11-24,-1000,",  # a reversal of part of P3
            "D,P5,NOPE-1,2026-11-24,300,",
            "D,P6,D2-20261123,24/11/2026,300,",
            "D,P7,D2-20261123,2026-11-24,12.5,",
            "T,,,,14613.5,7",
        ],
    )
    loaded = load_returns(cfg, engine, AS_OF)
    assert loaded.rejected == [] and loaded.payments == 4
    assert [(q["source_row"], q["field"], q["reason"]) for q in loaded.quarantine] == [
        (6, "account_ref", "UNKNOWN_ACCOUNT"),
        (8, "amount_minor", "BAD_AMOUNT"),
        (7, "paid_on", "BAD_DATE"),
    ]
    with engine.connect() as conn:
        paid = pd.read_sql(sa.select(AgencyPayment.__table__), conn).set_index("payment_ref")
    # 25 % commission, half up in minor units; the remittance is the rest
    assert paid["commission_minor"].to_dict() == {"P1": 1500, "P2": 1000, "P3": 1250, "P4": -250}
    assert (paid["remitted_minor"] == paid["amount_minor"] - paid["commission_minor"]).all()
    accounts = placements(engine)
    assert accounts.loc["D1", ["status", "end_reason", "collected_minor"]].tolist() == [
        "closed",
        "PAID_AGENCY",
        10_001,
    ]
    assert accounts.loc["D2", ["status", "collected_minor", "commission_minor"]].tolist() == [
        "active",
        4000,
        1000,
    ]


def test_a_file_that_is_not_csv_is_rejected_not_a_crash(setup):
    cfg, engine, inbox = setup
    (inbox / "payments_2.csv").write_bytes(b"record_type,payment_ref\n\xff\xfe broken\n")
    loaded = load_returns(cfg, engine, AS_OF)
    assert [r["error"][:45] for r in loaded.rejected] == [
        "payments_2.csv: not a readable UTF-8 CSV file"
    ]


def test_closures_return_accounts_with_their_reason(setup):
    cfg, engine, inbox = setup
    write(
        inbox,
        "closures_1.csv",
        [
            "record_type,account_ref,closed_on,reason,rows",
            "D,D2-20261123,2026-11-22,bkp,",
            "D,D1-20261123,2026-11-22,GONE,",
            "T,,,,2",
        ],
    )
    loaded = load_returns(cfg, engine, AS_OF)
    assert loaded.closed == 1
    assert [(q["field"], q["reason"]) for q in loaded.quarantine] == [("reason", "UNKNOWN_REASON")]
    accounts = placements(engine)
    assert accounts.loc["D2", ["status", "end_reason"]].tolist() == ["returned", "BKP"]
    assert str(accounts.loc["D2", "ended_on"])[:10] == "2026-11-22"
    assert accounts.loc["D1", "status"] == "active"


def test_the_database_holds_an_account_with_one_agency_at_a_time(setup):
    _, engine, _ = setup
    t = PlacedAccount.__table__
    with engine.connect() as conn:
        row = dict(conn.execute(sa.select(t).where(t.c.debtor_id == "D1")).mappings().one())
    second = {**row, "account_ref": "D1-20261124", "agency": "other"}
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(t.insert(), [second])
    with engine.begin() as conn:  # once the first has ended, a new placement is fine
        conn.execute(t.update().where(t.c.debtor_id == "D1").values(status="returned"))
        conn.execute(t.insert(), [second])
