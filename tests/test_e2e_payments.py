"""Money in the feeds stops reminders the same day; promises hold them; a broken one resumes.

One day, twice through ``dag.test()`` on the real local S3, SMTP and SMS servers: first a dry
run with no payment feed, to learn who is due today; then, with yesterday's card payments for
some of them, promises for others, the real run.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from dunning import ledger, reports
from tests.pinned import TODAY
from tests.test_e2e_daily import get_bytes, get_json, run

pytestmark = [pytest.mark.services, pytest.mark.airflow, pytest.mark.clock]


def _parquet(client, bucket, key) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(get_bytes(client, bucket, key)))


def test_payments_and_promises_decide_who_hears_from_us_today(
    daily_env, s3_client, s3_bucket, tmp_path
):
    daily_env(TODAY, debtors=400)
    portfolio = tmp_path / "portfolio"
    config = portfolio / "config.yaml"
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    cfg["payments"] = {"feeds": []}  # first: nobody has paid
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    state, tasks = run({"as_of": TODAY.isoformat(), "dry_run": True})
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    decided = _parquet(s3_client, s3_bucket, summary["decisions_file"])
    allowed = decided[(decided["channel"] == "email") & (decided["status"] == "allowed")]
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with ledger.ledger(url) as engine, engine.connect() as c:
        d = ledger.Debtor.__table__.c
        # Only debtors an email can reach (the gate does not yet hold back those with no
        # address: they fail at send time, and would fail this test on some dates).
        has_email = d.email.is_not(None) & (d.email != "")
        reachable = set(c.execute(sa.select(d.debtor_id).where(has_email)).scalars())
        emailed = allowed["debtor_id"][allowed["debtor_id"].isin(reachable)]
        emailed = emailed.drop_duplicates().sort_values()
        inv = ledger.InvoiceSnapshot.__table__.c
        open_items = pd.read_sql(
            sa.select(inv.debtor_id, inv.invoice_id, inv.currency, inv.open_minor).where(
                inv.as_of == TODAY, inv.open_minor != 0
            ),
            c,
        )
    owed = open_items.groupby("debtor_id").agg(
        total=("open_minor", "sum"), currency=("currency", "first"), items=("invoice_id", "size")
    )
    # A part payment leaves the newest invoices open; with one invoice the reminder stays due.
    single = emailed[emailed.map(owed["items"]) == 1]
    others = emailed[~emailed.isin(single)]
    assert len(single) >= 4 and len(others) >= 12, "too few debtors due today"
    partial = single.iloc[:4].tolist()
    payers, broken, current = (others.iloc[i : i + 4].tolist() for i in (0, 4, 8))

    # Yesterday's card payments: everything for some debtors, 10.00 less than that for others.
    day = TODAY - timedelta(days=1)
    pay = owed.loc[payers + partial].reset_index()
    pay["amount_minor"] = pay["total"] - pay["debtor_id"].isin(partial) * 1000
    cards = portfolio / "cards"
    cards.mkdir()
    pd.DataFrame(
        {
            "id": [f"ch_test_{i}" for i in range(len(pay))],
            "type": "charge",
            "status": "succeeded",
            "created": f"{day}T12:00:00Z",
            "amount": (pay["amount_minor"] / 100).map("{:.2f}".format),
            "currency": pay["currency"].str.lower(),
            "customer": pay["debtor_id"],
            "description": "card payment",
        }
    ).to_csv(cards / f"charges_{day}.csv", index=False)
    promises = [
        f"B-{d},{d},promise,{day - timedelta(days=20)},{owed.loc[d, 'currency']},"
        f"{day - timedelta(days=3)},5.00"  # broken yesterday, after their last contact
        for d in broken
    ] + [
        f"C-{d},{d},promise,{day},{owed.loc[d, 'currency']},{day + timedelta(days=7)},5.00"
        for d in current
    ]
    (portfolio / "promises.csv").write_text(
        "promise_id,debtor_id,kind,created_on,currency,due_on,amount\n"
        + "\n".join(promises)
        + "\n",
        encoding="utf-8",
    )
    cfg["payments"] = {
        "feeds": [{"name": "cards", "format": "processor_csv", "path": "cards/*.csv"}],
        "promises": "promises.csv",
    }
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")

    state, tasks = run({"as_of": TODAY.isoformat()})
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    assert summary["payments_matched"] == len(pay) and summary["payments_unmatched"] == 0
    with ledger.ledger(url) as engine, engine.connect() as c:
        sent = pd.read_sql(sa.select(ledger.Message.__table__), c)
    sent = sent[sent["status"] == "sent"]
    wave = _parquet(s3_client, s3_bucket, summary["wave_file"]).set_index("contact_key")

    # Paid in yesterday's feed: no reminder today.
    assert not sent["debtor_id"].isin(payers).any()
    # Paid all but 10.00: reminded, for the 10.00.
    for debtor in partial:
        rows = wave[(wave["debtor_id"] == debtor) & (wave["channel"] == "email")]
        assert len(rows) == 1 and rows["balance_minor"].item() == 1000
    assert set(partial) <= set(sent["debtor_id"])
    # A current promise holds the reminders; a broken one resumes them, in its own words.
    assert not sent["debtor_id"].isin(current).any()
    resumed = sent[sent["debtor_id"].isin(broken) & (sent["channel"] == "email")]
    assert set(resumed["debtor_id"]) == set(broken)
    assert set(resumed["template"]) == {"promise_broken"}
    # Finance sees the day's reconciliation in the summary and the review files in the lake.
    assert summary["payments"]["instalments_by_status"] == {"broken": 4, "pending": 4}
    assert Path(summary["payments"]["exceptions"]).name == "exceptions.csv"
