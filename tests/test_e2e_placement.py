"""Agency placement end to end: ``dag.test()`` on the real local S3 server (SSE-S3 on).

Yesterday's run places the accounts past the cut-off; running it again changes nothing.  Today
one placed debtor's payment arrives and an agency acknowledges with a wrong total: the paid
account is in today's recall file, the acknowledgement is rejected with the file, row and field,
and the run shows it.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from dunning import ledger, reports
from dunning.demo import demo_clock
from tests.pinned import TODAY
from tests.test_e2e_daily import get_bytes, get_json, run

pytestmark = [pytest.mark.services, pytest.mark.airflow]

YESTERDAY = TODAY - timedelta(days=1)


def _objects(client, bucket, prefix="placements/") -> dict[str, tuple[str, datetime]]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listed}


def _placements(url: str) -> pd.DataFrame:
    with ledger.ledger(url) as engine, engine.connect() as conn:
        return pd.read_sql(sa.select(ledger.PlacedAccount.__table__), conn)


def test_accounts_past_cutoff_reach_their_agency_once_and_come_back_when_paid(
    daily_env, s3_client, s3_bucket, tmp_path, pin_clock
):
    daily_env(YESTERDAY, debtors=300)
    portfolio = tmp_path / "portfolio"
    config = portfolio / "config.yaml"
    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    cfg["payments"] = {"feeds": [{"name": "cards", "format": "processor_csv", "path": "cards/*"}]}
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    (portfolio / "cards").mkdir()
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    yesterday_noon = datetime.combine(YESTERDAY, datetime.min.time(), UTC) + timedelta(hours=12)
    pin_clock(yesterday_noon)

    state, tasks = run({"as_of": YESTERDAY.isoformat()})
    assert state == "success", tasks
    summary = get_json(s3_client, s3_bucket, reports.summary_key(YESTERDAY))
    assert summary["accounts_placed"] > 5
    placed = _placements(url)
    assert len(placed) == summary["accounts_placed"] and set(placed["status"]) == {"active"}
    assert placed["debtor_id"].is_unique  # one agency at a time

    # Each agency's delivery: the files, then a manifest whose totals match them; SSE on all.
    objects = _objects(s3_client, s3_bucket)
    manifests = [k for k in objects if k.endswith("manifest.json")]
    assert {k.split("/")[1] for k in manifests} == {"agency=northwind", "agency=keystone"}
    for key in objects:
        head = s3_client.head_object(Bucket=s3_bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256", key
    layouts = {a["name"]: a["layout"] for a in cfg["placement"]["agencies"]}
    for key in manifests:
        manifest = json.loads(get_bytes(s3_client, s3_bucket, key))
        agency = manifest["agency"]
        assert manifest["as_of"] == YESTERDAY.isoformat()
        (entry,) = manifest["files"]
        data = get_bytes(s3_client, s3_bucket, key.replace("manifest.json", entry["name"]))
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        mine = placed[placed["agency"] == agency]
        assert entry["rows"] == len(mine)
        assert entry["balance_minor_total"] == mine["balance_minor"].sum()
        if layouts[agency]["format"] == "csv":
            frame = pd.read_csv(io.BytesIO(data), dtype={"account_ref": str})
            assert list(frame.columns) == layouts[agency]["fields"]  # nothing more leaves
            assert frame["balance_minor"].sum() == entry["balance_minor_total"]
            assert len(frame) == entry["rows"]
        else:  # fixed width with an AIM-style control row: count and principal total
            lines = data.decode("utf-8").splitlines()
            assert lines[-1] == f"T{entry['rows']:09d}{entry['balance_minor_total']:015d}"
    # Placed debtors left the internal reminders.
    plan = pd.read_parquet(io.BytesIO(get_bytes(s3_client, s3_bucket, summary["plan_file"])))
    assert not plan["debtor_id"].isin(placed["debtor_id"]).any()

    # The same date again: the same objects, untouched, and no second placement.
    pin_clock(yesterday_noon + timedelta(hours=1))
    state, tasks = run({"as_of": YESTERDAY.isoformat()})
    assert state == "success", tasks
    assert _objects(s3_client, s3_bucket) == objects
    again = _placements(url)
    assert len(again) == len(placed)
    rerun = get_json(s3_client, s3_bucket, reports.summary_key(YESTERDAY))
    assert rerun["accounts_placed"] == summary["accounts_placed"]
    assert rerun["placement_files"] == summary["placement_files"]

    # Today: a placed northwind debtor pays us in full; keystone acknowledges correctly,
    # northwind with a wrong total.
    payer = placed[placed["agency"] == "northwind"].iloc[0]
    with ledger.ledger(url) as engine, engine.connect() as conn:
        inv = ledger.InvoiceSnapshot.__table__.c
        owed = pd.read_sql(
            sa.select(inv.currency, inv.open_minor).where(
                inv.as_of == YESTERDAY, inv.debtor_id == payer["debtor_id"], inv.open_minor > 0
            ),
            conn,
        )
    pd.DataFrame(
        {
            "id": ["ch_paid_in_full"],
            "type": "charge",
            "status": "succeeded",
            "created": f"{YESTERDAY}T15:00:00Z",
            "amount": [f"{owed['open_minor'].sum() / 100:.2f}"],
            "currency": owed["currency"].iloc[0].lower(),
            "customer": payer["debtor_id"],
            "description": "paid in full",
        }
    ).to_csv(portfolio / "cards" / f"charges_{YESTERDAY}.csv", index=False)
    for agency, error in (("keystone", 0), ("northwind", 1)):
        mine = placed[placed["agency"] == agency]
        inbox = portfolio / "agency_returns" / agency
        inbox.mkdir(parents=True, exist_ok=True)
        lines = ["record_type,placement_file,account_ref,balance_minor,rows"]
        lines += [f"D,{r.file_key},{r.account_ref},{r.balance_minor}," for r in mine.itertuples()]
        lines.append(f"T,,,{mine['balance_minor'].sum() + error},{len(mine)}")
        (inbox / f"ack_{YESTERDAY}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    pin_clock(demo_clock(TODAY))
    state, tasks = run({"as_of": TODAY.isoformat()})
    assert state == "failed" and tasks["summarize"] == "failed", tasks
    assert tasks["place"] == "success" and tasks["send_email"] == "success", tasks
    today = get_json(s3_client, s3_bucket, reports.summary_key(TODAY))
    assert today["status"] == "agency_file_rejected"
    (rejected,) = today["agency_files_rejected"]
    assert rejected["agency"] == "northwind"
    assert rejected["error"] == (
        f"ack_{YESTERDAY}.csv row {len(placed[placed['agency'] == 'northwind']) + 2} (trailer) "
        f"balance_minor: '{placed[placed['agency'] == 'northwind']['balance_minor'].sum() + 1}' "
        f"but the detail total is {placed[placed['agency'] == 'northwind']['balance_minor'].sum()}"
    )
    after = _placements(url).set_index("account_ref")
    keystone = after[after["agency"] == "keystone"]
    assert keystone["acknowledged_on"].notna().all()  # the right acknowledgement was loaded
    assert after.loc[after["agency"] == "northwind", "acknowledged_on"].isna().all()

    recall_key = f"placements/agency=northwind/as_of={TODAY}/recalls.csv"
    recall = pd.read_csv(io.BytesIO(get_bytes(s3_client, s3_bucket, recall_key)), dtype=str)
    assert payer["account_ref"] in set(recall["account_ref"])
    assert recall.set_index("account_ref").loc[payer["account_ref"], "reason"] == "PAID"
    assert after.loc[payer["account_ref"], "status"] == "recalled"
    manifest = json.loads(
        get_bytes(s3_client, s3_bucket, f"placements/agency=northwind/as_of={TODAY}/manifest.json")
    )
    assert {e["name"]: e["rows"] for e in manifest["files"]}["recalls.csv"] == len(recall)
    # ... a delivery of its own, naming the one whose account it calls back
    original = f"placements/agency=northwind/as_of={YESTERDAY}/manifest.json"
    assert manifest["references"] == [original]
    # Yesterday's deliveries are as they were published: the recall is today's delivery.
    now = _objects(s3_client, s3_bucket)
    assert {k: now[k] for k in objects} == objects
