"""Agency placement: accounts past the cut-off go to collection agencies as files on S3.

The daily stage (``place_to_lake``) selects accounts (``selection``), builds their records
(``records``), writes each agency's placement and recall files and publishes them with a manifest
(``files``), and keeps the placement ledger: an account is with one agency at a time, placed
accounts leave the internal reminders, recalls and returns end a placement.  What the agencies
send back is loaded by ``returns``; ``economics`` recommends the cut-off.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import pandas as pd
import sqlalchemy as sa

from dunning import clock, compliance, lake
from dunning.config import Agency, Config
from dunning.ledger import AgencyFile, ComplianceEvent, PlacedAccount, bulk_insert, insert_ignore
from dunning.placement import files, records, selection
from dunning.planning import assign_segments
from dunning.quality import isin, read_snapshots

log = logging.getLogger(__name__)
EXTENSIONS = {"csv": "csv", "pipe": "txt", "fixed": "txt"}
PLACEMENT_COLUMNS = [c.name for c in PlacedAccount.__table__.columns]


def read_placements(conn: sa.Connection) -> pd.DataFrame:
    """Every placement, in reference order: files built from it are the same bytes each time."""
    t = PlacedAccount.__table__
    return pd.read_sql(sa.select(t).order_by(t.c.account_ref), conn)


def _published(conn: sa.Connection) -> pd.Series:
    f = AgencyFile.__table__.c
    return pd.read_sql(sa.select(f.name).where(f.direction == "out"), conn)["name"]


def _file_name(agency: Agency, kind: str) -> str:
    return f"{kind}.{EXTENSIONS[agency.layout.format]}"


def _recall_requests(conn: sa.Connection, as_of: date) -> pd.DataFrame:
    ev = ComplianceEvent.__table__.c
    return pd.read_sql(
        sa.select(ev.debtor_id, ev.effective_date).where(
            ev.event == "placement_recall", ev.effective_date <= as_of
        ),
        conn,
    )


def _hold_too_long(
    chosen: pd.DataFrame, recs: pd.DataFrame, agencies: dict[str, Agency]
) -> pd.Series:
    """Per new account, why its record does not fit its agency's fixed-width layout ("")."""
    why = pd.Series("", index=chosen.index, dtype="object")
    for name, agency in agencies.items():
        mine = (chosen["agency"] == name).to_numpy()
        if mine.any():
            why[mine] = files.too_long(recs[mine], agency.layout).to_numpy()
    return why


def place_to_lake(
    cfg: Config,
    as_of: date,
    root: Any,
    engine: sa.Engine,
    *,
    validated: dict,
    view_key: str,
    out_root: Any,
    publish: bool,
) -> dict:
    """Select, record and publish the day's placements and recalls; ``publish`` False (a
    backfill, a dry run) writes only the selection for review: no ledger change, no file.

    The ledger is written before the files, so the database decides who is placed; a delivery
    that a failed run left unpublished (its placements are in the ledger, its files are not in
    ``agency_files``) is published by the next run, for its own date."""
    if not cfg.placement.enabled:
        return {"mode": "disabled", "accounts_placed": None, "placement_files": []}
    agencies = {a.name: a for a in cfg.placement.agencies}
    view = assign_segments(lake.read_parquet(root / view_key), cfg)
    state, windows = compliance.debtor_state(engine, cfg, as_of)
    with engine.connect() as conn:
        ledger_rows = read_placements(conn)
        requests = _recall_requests(conn, as_of)
    chosen = selection.select(view, state, ledger_rows, cfg, as_of)
    invoices, debtors, _ = read_snapshots(root, validated)
    payments = records.last_payments(engine, as_of)

    def build(accounts: pd.DataFrame) -> pd.DataFrame:
        return records.build_records(
            accounts, view, state, windows, invoices, debtors, payments, cfg
        )

    placed_today = ledger_rows.loc[
        pd.to_datetime(ledger_rows["placed_on"]) == pd.Timestamp(as_of), "debtor_id"
    ]
    new = chosen[(chosen["exclusions"] == "") & ~isin(chosen["debtor_id"], placed_today)]
    new = pd.DataFrame(
        {
            "account_ref": records.account_ref(new["debtor_id"], as_of).to_numpy(),
            "debtor_id": new["debtor_id"].to_numpy(),
            "agency": new["agency"].to_numpy(),
            "segment": new["segment"].to_numpy(),
            "placed_on": as_of,
            "currency": new["currency"].to_numpy(),
            "balance_minor": new["overdue_minor"].astype("int64").to_numpy(),
            "days_past_due": new["max_days_past_due"].astype("int64").to_numpy(),
        },
        index=new.index,
    )
    fixed = isin(new["agency"], [n for n, a in agencies.items() if a.layout.format == "fixed"])
    held = pd.Series("", index=new.index, dtype="object")
    if fixed.any():
        checked = new[fixed]
        held[fixed] = _hold_too_long(checked, build(checked).set_axis(checked.index), agencies)
    chosen.loc[held.index[held != ""], "exclusions"] = held[held != ""]
    new = new[held == ""]
    active = ledger_rows[ledger_rows["status"] == "active"]
    known = invoices["debtor_id"] if "debtor_id" in invoices else pd.Series(dtype="str")
    recalled = selection.recalls(active, view, state, requests, as_of, known)
    selection_key = lake.partition("placement_selection", as_of) + "/selection.parquet"
    keep = [
        "debtor_id", "segment", "country", "currency", "overdue_minor", "max_days_past_due",
        "cutoff_days", "exclusions", "agency",
    ]  # fmt: skip
    lake.write_parquet(root / selection_key, chosen[keep])
    excluded = chosen.loc[chosen["exclusions"] != "", "exclusions"].str.split(",").explode()
    result: dict[str, Any] = {
        "selection": selection_key,
        "accounts_past_cutoff": len(chosen),
        "excluded": excluded.value_counts().astype(int).to_dict(),
        "placed_missing_from_ar": len(selection.missing_from_ar(active, known)),
    }
    if not publish:
        return {
            **result,
            "mode": "skipped",
            "would_place": len(new),
            "would_recall": len(recalled),
            "accounts_placed": 0,
            "accounts_recalled": 0,
            "placement_files": [],
        }
    _record(engine, new, recalled, agencies, as_of)
    with engine.connect() as conn:
        ledger_rows = read_placements(conn)
        done = _published(conn)
    placed_on = pd.to_datetime(ledger_rows["placed_on"])
    recalled_on = pd.to_datetime(ledger_rows["ended_on"]).where(
        ledger_rows["recall_file_key"].notna()
    )
    # Deliveries a failed run left unpublished, each by its own date: a recall today of an
    # account placed last week is today's delivery, and last week's is never touched again.
    unplaced = ~isin(ledger_rows["file_key"], done)
    unrecalled = recalled_on.notna() & ~isin(ledger_rows["recall_file_key"].fillna(""), done)
    days = sorted(
        {pd.Timestamp(as_of)} | set(placed_on[unplaced]) | set(recalled_on[unrecalled].dropna())
    )
    published: dict[str, Any] = {"placement_files": [], "manifests": [], "manifest_keys": []}
    for day in days:
        part = _publish(
            cfg,
            day.date(),
            engine,
            out_root,
            agencies,
            build(ledger_rows[placed_on == day]),
            ledger_rows[recalled_on == day],
        )
        for key in published:
            published[key] += part[key]
    today = ledger_rows[placed_on == pd.Timestamp(as_of)]
    back = ledger_rows[recalled_on == pd.Timestamp(as_of)]
    return {
        **result,
        "mode": "published",
        "accounts_placed": len(today),
        "accounts_recalled": len(back),
        "by_agency": today["agency"].value_counts().astype(int).to_dict(),
        "recalls_by_reason": back["end_reason"].value_counts().astype(int).to_dict(),
        **published,
    }


def _record(
    engine: sa.Engine,
    new: pd.DataFrame,
    recalled: pd.DataFrame,
    agencies: dict[str, Agency],
    as_of: date,
) -> None:
    """New placements and recalls in one transaction: the unique index on active placements
    refuses a debtor that another run placed meanwhile, so nothing goes out twice."""
    t = PlacedAccount.__table__
    rows = new.assign(
        principal_minor=new["balance_minor"],
        interest_minor=0,
        fees_minor=0,
        file_key=[
            f"{files.prefix(a, as_of)}/{_file_name(agencies[a], 'placements')}"
            for a in new["agency"]
        ],
        status="active",
        acknowledged_on=None,
        collected_minor=0,
        commission_minor=0,
        ended_on=None,
        end_reason=None,
        recall_file_key=None,
    )
    with engine.begin() as conn:
        bulk_insert(conn, t, rows[PLACEMENT_COLUMNS])
        for reason, group in recalled.groupby("reason"):
            for agency, refs in group.groupby("agency")["account_ref"]:
                key = f"{files.prefix(agency, as_of)}/{_file_name(agencies[agency], 'recalls')}"
                conn.execute(
                    t.update()
                    .where(t.c.account_ref.in_(refs.tolist()), t.c.status == "active")
                    .values(status="recalled", ended_on=as_of, end_reason=reason,
                            recall_file_key=key)
                )  # fmt: skip


def _publish(
    cfg: Config,
    as_of: date,
    engine: sa.Engine,
    out_root: Any,
    agencies: dict[str, Agency],
    placed: pd.DataFrame,
    back: pd.DataFrame,
) -> dict:
    """Per agency with anything today: its placement and recall files, then the manifest."""
    uris, manifests, keys = [], [], []
    for name, agency in agencies.items():
        mine = placed[placed["agency"] == name]
        gone = back[back["agency"] == name]
        if mine.empty and gone.empty:
            continue
        data = []
        if len(mine):
            data.append(
                files.DataFile(
                    name=_file_name(agency, "placements"),
                    kind="placements",
                    data=files.render(mine, agency.layout),
                    rows=len(mine),
                    balance_minor_total=int(mine["balance_minor"].sum()),
                    totals={k: int(mine[k].sum()) for k in files.MONEY_TOTALS},
                )
            )
        if len(gone):
            recall = pd.DataFrame(
                {
                    "account_ref": gone["account_ref"].to_numpy(),
                    "customer_ref": gone["debtor_id"].to_numpy(),
                    "recall_date": pd.Timestamp(as_of),
                    "reason": gone["end_reason"].to_numpy(),
                    "balance_minor": gone["balance_minor"].astype("int64").to_numpy(),
                }
            )
            data.append(
                files.DataFile(
                    name=_file_name(agency, "recalls"),
                    kind="recalls",
                    data=files.render(recall, agency.layout, files.recall_specs(agency.layout)),
                    rows=len(recall),
                    balance_minor_total=int(recall["balance_minor"].sum()),
                )
            )
        manifest = files.publish(
            out_root,
            name,
            as_of,
            data,
            creditor=cfg.portfolio.name,
            sse=cfg.placement.encryption,
            kms_key_id=cfg.placement.kms_key_id,
            public_key=cfg.resolve(agency.pgp_public_key) if agency.pgp_public_key else None,
            references=sorted(
                {
                    f"{files.prefix(name, pd.Timestamp(d).date())}/manifest.json"
                    for d in gone["placed_on"]
                }
            ),
        )
        where = files.folder(out_root, name, as_of)
        uris += [files.uri(where / e["name"]) for e in manifest["files"]]
        manifests.append(files.uri(where / "manifest.json"))
        if manifest["changed"]:  # what the Asset event tells the notify DAG about
            keys.append(f"{files.prefix(name, as_of)}/manifest.json")
        elif manifest["differs"]:
            log.warning(
                "%s %s: the delivery is published and stays as it is; today's view of it "
                "differs (a correction goes out as a new delivery)",
                name,
                as_of,
            )
        _log_files(engine, name, as_of, manifest)
    return {"placement_files": uris, "manifests": manifests, "manifest_keys": keys}


def _log_files(engine: sa.Engine, agency: str, as_of: date, manifest: dict) -> None:
    """Each published file in ``agency_files`` once (by content hash): the exchange's audit
    trail, and what an agency's acknowledgement is checked against."""
    now = clock.utcnow()
    rows = [
        {
            "sha256": e["plaintext_sha256"],
            "agency": agency,
            "as_of": as_of,
            "direction": "out",
            "kind": e["kind"],
            "name": f"{files.prefix(agency, as_of)}/{e['name'].removesuffix('.pgp')}",
            "rows": e["rows"],
            "total_minor": e["balance_minor_total"],
            "status": "published",
            "error": None,
            "recorded_at": now,
        }
        for e in manifest["files"]
    ]
    t = AgencyFile.__table__
    with engine.begin() as conn:  # a re-published name replaces its earlier record
        names = [r["name"] for r in rows]
        conn.execute(t.delete().where(t.c.direction == "out", t.c.name.in_(names)))
        conn.execute(insert_ignore(conn, t, ["sha256"]), rows)
