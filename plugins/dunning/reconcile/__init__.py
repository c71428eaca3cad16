"""Payment reconciliation: money that came in stops the reminders the same day, and every
payment ends up matched or in front of a person.

The daily run reconciles right after the snapshot is loaded and before anything is planned:

1. read every payment feed (``feeds``), quarantining lines that fail a check;
2. skip lines an earlier run already reconciled, and mark the same money reported by two feeds
   (or twice) as a duplicate, kept for review, never counted twice;
3. match payments to open invoices (``matching``), undo what reversals, refunds and chargebacks
   take back (the original payment's allocations, negated), classify card declines and write the
   processor's retry instructions (``retries``);
4. record lines, allocations, exceptions and declines in the ledger (a re-run of the date
   replaces its own rows), then judge promises to pay and payment plans (``promises``).

The AR system applies cash a little late, so its open amounts miss the last
``payments.ar_cash_lag_days`` days of payments: ``open_after_payments`` lowers them by what we
matched in those days (and raises them by what a reversal reopened).  Aging, planning and the
waves all read open amounts through it: a debtor who paid yesterday gets no reminder today, and
one who paid part gets a reminder for the rest.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from dunning import lake, ledger, quality
from dunning.config import Config
from dunning.reconcile import feeds, matching, promises, retries
from dunning.reconcile.feeds import UNDOING

log = logging.getLogger(__name__)

EXCEPTION_FILE_COLUMNS = (
    "line_id", "reason", "detail", "feed", "source_file", "source_row", "kind", "booked_on",
    "amount_minor", "currency", "payer_name", "payer_account", "reference", "raw",
)  # fmt: skip


def read_lines(cfg: Config, as_of: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed lines of every feed booked on or before ``as_of``, and the quarantine."""
    parts, quarantine = [], []
    for order, feed in enumerate(cfg.payments.feeds):
        text, malformed = feeds.read_feed(feed, cfg, as_of)
        lines, bad = feeds.typed(text, feed)
        parts.append(lines.assign(_order=order))
        quarantine += [bad, malformed]
    if not parts:
        return quality.empty_frame([*feeds.LINE_COLUMNS, "_order"]), quality._empty_quarantine()
    lines = pd.concat(parts, ignore_index=True)
    lines = lines[pd.to_datetime(lines["booked_on"]) <= pd.Timestamp(as_of)]
    return lines.reset_index(drop=True), pd.concat(quarantine, ignore_index=True)


def _known(conn: sa.Connection, lines: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Ledger lines from other runs in the booking-date range of ``lines``."""
    t = ledger.PaymentLine.__table__.c
    if lines.empty:
        return pd.DataFrame(columns=["line_id", "fingerprint", "as_of"])
    start = pd.to_datetime(lines["booked_on"]).min().date()
    return pd.read_sql(
        sa.select(t.line_id, t.fingerprint, t.as_of).where(t.booked_on >= start, t.as_of != as_of),
        conn,
    )


def mark_duplicates(lines: pd.DataFrame, known: pd.DataFrame) -> pd.DataFrame:
    """``duplicate_of``: the line that reported the same money first (earlier run, else the
    first feed in config order, then file and line)."""
    # Only lines whose money shows up more than once need looking at (few, on a normal day).
    again = lines["fingerprint"].duplicated(keep=False) | quality.isin(
        lines["fingerprint"], known["fingerprint"].astype("str")
    )
    some = lines[again].sort_values(["_order", "source_file", "source_row"], kind="stable")
    first_today = some.drop_duplicates("fingerprint").set_index("fingerprint")["line_id"]
    earlier = known.drop_duplicates("fingerprint").set_index("fingerprint")["line_id"]
    dup_of = some["fingerprint"].map(earlier)
    today = some["fingerprint"].map(first_today)
    dup_of = dup_of.fillna(today.where(today != some["line_id"]))
    return lines.assign(duplicate_of=dup_of.reindex(lines.index).astype("object"))


def open_after_payments(
    conn: sa.Connection,
    as_of: date,
    lag_days: int,
    invoices: pd.DataFrame,
    *,
    exclude_run: date | None = None,
) -> pd.DataFrame:
    """``invoices`` (source, invoice_id, open_minor, amount_minor, ...) with open amounts net of
    payments matched in the last ``lag_days`` days that AR has not applied yet.  An invoice a
    reversal reopened after it left the AR snapshot comes back, from its latest snapshot."""
    a = ledger.Allocation.__table__.c
    query = (
        sa.select(a.source, a.invoice_id, sa.func.sum(a.amount_minor).label("paid"))
        .where(
            a.booked_on >= as_of - timedelta(days=lag_days),
            a.booked_on <= as_of,
            a.invoice_id.is_not(None),
        )
        .group_by(a.source, a.invoice_id)
    )
    if exclude_run is not None:
        query = query.where(a.as_of != exclude_run)
    paid = pd.read_sql(query, conn)
    if paid.empty:
        return invoices
    out = invoices.merge(paid, on=["source", "invoice_id"], how="left")
    out["paid"] = out["paid"].fillna(0).astype("int64")
    lowered = out["open_minor"].astype("int64") - out["paid"]
    ceiling = out["amount_minor"].astype("int64") if "amount_minor" in out else lowered
    # Invoices lower; a reversal also reopens one AR already shows as paid.
    adjust = (out["open_minor"] > 0) | (out["paid"] < 0)
    out["open_minor"] = np.where(
        adjust, np.clip(lowered, 0, np.maximum(ceiling, 0)), out["open_minor"]
    )
    out = out.drop(columns="paid")
    present = pd.MultiIndex.from_frame(invoices[["source", "invoice_id"]].astype(str))
    missing = paid[
        (paid["paid"] < 0)
        & ~pd.MultiIndex.from_frame(paid[["source", "invoice_id"]].astype(str)).isin(present)
    ]
    if missing.empty:
        return out
    return pd.concat([out, _reopened(conn, as_of, missing, invoices.columns)], ignore_index=True)


def _reopened(
    conn: sa.Connection, as_of: date, missing: pd.DataFrame, columns: pd.Index
) -> pd.DataFrame:
    inv = ledger.InvoiceSnapshot.__table__.c
    rows = pd.read_sql(
        sa.select(inv).where(inv.as_of < as_of, inv.invoice_id.in_(missing["invoice_id"].tolist())),
        conn,
    )
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.sort_values("as_of").drop_duplicates(["source", "invoice_id"], keep="last")
    rows = rows.merge(missing, on=["source", "invoice_id"])
    rows["open_minor"] = np.minimum(-rows["paid"], rows["amount_minor"]).astype("int64")
    rows["due_date"] = pd.to_datetime(rows["due_date"])
    rows["issue_date"] = pd.to_datetime(rows["issue_date"])
    return rows[[c for c in columns if c in rows.columns]]


BOOK_COLUMNS = (
    "source", "invoice_id", "debtor_id", "doc_type", "currency", "due_date", "amount_minor",
    "open_minor",
)  # fmt: skip


def _book(
    conn: sa.Connection, cfg: Config, as_of: date, invoices: pd.DataFrame | None
) -> matching.Book:
    """Open items from ``invoices`` (the day's validated snapshot, read from the lake: ten
    times faster than the same rows out of the ledger), else from the ledger's snapshot."""
    inv, d = ledger.InvoiceSnapshot.__table__.c, ledger.Debtor.__table__.c
    if invoices is None:
        items = pd.read_sql(
            sa.select(*[inv[c] for c in BOOK_COLUMNS]).where(inv.as_of == as_of), conn
        )
    elif invoices.empty:  # no invoice source delivered rows today
        items = quality.empty_frame(BOOK_COLUMNS, amount_minor="int64", open_minor="int64")
    else:  # a missing column is an error here, not an empty book
        items = invoices[list(BOOK_COLUMNS)]
    items = open_after_payments(
        conn, as_of, cfg.payments.ar_cash_lag_days, items, exclude_run=as_of
    )
    debtors = pd.read_sql(sa.select(d.debtor_id, d.name, d.country), conn)
    p = ledger.PayerAccount.__table__.c
    accounts = pd.read_sql(sa.select(p.account, p.debtor_id), conn)
    rates = pd.DataFrame(columns=["date", "currency", "to", "rate"])
    if cfg.payments.rates is not None:
        rates = pd.read_csv(cfg.resolve(cfg.payments.rates), dtype={"currency": str, "to": str})
    return matching.prepare_book(matching.Book(items, debtors, accounts, rates))


def _undo(
    undo: pd.DataFrame, originals: pd.DataFrame, allocations: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reversals, refunds and chargebacks take back their payment's allocations, in proportion.

    Returns (allocations, linked undo line ids with the original's debtor)."""
    keyed = originals[originals["external_id"].fillna("") != ""].drop_duplicates("external_id")
    linked = undo[undo["original_id"].fillna("") != ""].merge(
        keyed[["external_id", "line_id", "amount_minor"]].rename(
            columns={
                "external_id": "original_id",
                "line_id": "orig_line",
                "amount_minor": "orig_amount",
            }
        ),
        on="original_id",
    )
    if linked.empty:
        return matching._empty_allocations(), linked
    # Several undo lines of one payment never take back more than it paid (today's, in order).
    linked = linked.sort_values("line_id")
    before = linked.groupby("orig_line")["amount_minor"].cumsum() - linked["amount_minor"]
    left = (linked["orig_amount"] - before).clip(lower=0)
    share = np.minimum(linked["amount_minor"], left) / linked["orig_amount"]
    back = (
        linked[["line_id", "orig_line", "kind"]]
        .assign(share=share)
        .merge(allocations.rename(columns={"line_id": "orig_line"}), on="orig_line")
    )
    back["amount_minor"] = -(back["amount_minor"] * back["share"]).round().astype("int64")
    back["method"], back["confidence"] = back["kind"], 1.0
    return back[list(matching.ALLOCATION_COLUMNS)], linked


def reconcile(
    cfg: Config, as_of: date, engine: sa.Engine, invoices: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Reconcile the feeds for ``as_of`` into the ledger; returns the frames and counts.

    ``invoices``: the day's snapshot when the caller has it (else read from the ledger).
    ``seconds`` splits the time between matching (reading the feeds to knowing where every
    line's money goes) and recording it, the two costs an operator tunes differently."""
    start = time.perf_counter()
    lines, quarantine = read_lines(cfg, as_of)
    with engine.connect() as conn:
        known = _known(conn, lines, as_of)
        lines = lines[~lines["line_id"].isin(known["line_id"])]
        lines = mark_duplicates(lines, known)
        book = _book(conn, cfg, as_of, invoices)
        earlier_allocs = _earlier_allocations(conn, lines, as_of)
        earlier_lines = _earlier_payments(conn, lines, as_of)
        earlier_fails = _earlier_failures(conn, lines, as_of)
    fresh = lines["duplicate_of"].isna()
    pay = lines[fresh & lines["kind"].eq("payment")]
    s = cfg.payments
    matched = matching.match_payments(
        pay, book, threshold=s.auto_apply_confidence, tolerance=s.fx_tolerance,
        window_days=s.date_window_days,
    )  # fmt: skip
    undo = lines[fresh & lines["kind"].isin(UNDOING)]
    originals = pd.concat([pay, earlier_lines], ignore_index=True)
    undone, linked = _undo(
        undo, originals, pd.concat([matched.allocations, earlier_allocs], ignore_index=True)
    )
    allocations = pd.concat([matched.allocations, undone], ignore_index=True)
    declines = lines[fresh & lines["kind"].eq("decline")]
    instructions = _retries(declines, earlier_fails, book, s.retries)
    status = _statuses(lines, pay, matched, undo, linked, undone)
    exceptions = pd.concat(
        [
            matched.exceptions,
            pd.DataFrame({"line_id": lines.loc[~fresh, "line_id"], "reason": matching.DUPLICATE,
                          "detail": [json.dumps({"duplicate_of": v}) for v in lines.loc[~fresh, "duplicate_of"]]}),
            pd.DataFrame({"line_id": undo.loc[~undo["line_id"].isin(linked["line_id"]), "line_id"],
                          "reason": matching.UNKNOWN_ORIGINAL, "detail": "{}"}),
        ],
        ignore_index=True,
    )  # fmt: skip
    matched_at = time.perf_counter()
    _record(engine, as_of, status, allocations, exceptions, declines, instructions)
    evaluated, flags, promise_q = _promises(cfg, as_of, engine)
    seconds = {"match": matched_at - start, "record": time.perf_counter() - matched_at}
    return {
        "seconds": seconds,
        "lines": status,
        "allocations": allocations,
        "exceptions": exceptions,
        "instructions": instructions,
        "instalments": evaluated,
        "flags": flags,
        "quarantine": pd.concat([quarantine, promise_q], ignore_index=True),
    }


def _earlier_allocations(conn: sa.Connection, lines: pd.DataFrame, as_of: date) -> pd.DataFrame:
    a, t = ledger.Allocation.__table__.c, ledger.PaymentLine.__table__.c
    wanted = lines.loc[lines["kind"].isin(UNDOING), "original_id"].dropna().unique().tolist()
    if not wanted:
        return matching._empty_allocations()
    query = (
        sa.select(*[a[c] for c in matching.ALLOCATION_COLUMNS])
        .join(ledger.PaymentLine.__table__, t.line_id == a.line_id)
        .where(t.external_id.in_(wanted), t.as_of != as_of)
    )
    return pd.read_sql(query, conn)


def _earlier_payments(conn: sa.Connection, lines: pd.DataFrame, as_of: date) -> pd.DataFrame:
    t = ledger.PaymentLine.__table__.c
    wanted = lines.loc[lines["kind"].isin(UNDOING), "original_id"].dropna().unique().tolist()
    if not wanted:
        return pd.DataFrame(columns=["line_id", "external_id", "amount_minor"])
    return pd.read_sql(
        sa.select(t.line_id, t.external_id, t.amount_minor, t.debtor_id).where(
            t.external_id.in_(wanted),
            t.kind == "payment",
            t.as_of != as_of,
            t.status != "duplicate",
        ),
        conn,
    )


def _earlier_failures(conn: sa.Connection, lines: pd.DataFrame, as_of: date) -> pd.DataFrame:
    f = ledger.PaymentFailure.__table__.c
    refs = _charge_ref(lines[lines["kind"] == "decline"]).unique().tolist()
    if not refs:
        return pd.DataFrame(columns=["charge_ref", "failed_on"])
    return pd.read_sql(
        sa.select(f.charge_ref, f.failed_on).where(f.charge_ref.in_(refs), f.as_of != as_of), conn
    )


def _charge_ref(declines: pd.DataFrame) -> pd.Series:
    """What a retry retries: the invoice the charge was for, else the charge itself."""
    hint = declines["invoice_hint"].fillna("")
    return hint.where(hint != "", declines["external_id"].fillna(declines["line_id"]))


def _retries(
    declines: pd.DataFrame, earlier: pd.DataFrame, book: matching.Book, rules
) -> pd.DataFrame:
    if declines.empty:
        return retries.schedule(declines, earlier, pd.Series(dtype=str), rules)
    known = book.debtors.drop_duplicates("id_key", keep=False).set_index("id_key")
    debtor = feeds.normalize_text(declines["debtor_hint"]).map(known["debtor_id"])
    country = feeds.normalize_text(declines["debtor_hint"]).map(known["country"])
    frame = retries.classify(declines).assign(
        charge_ref=_charge_ref(declines), debtor_id=debtor, failed_on=declines["booked_on"]
    )
    out = retries.schedule(frame, earlier, country, rules)
    return out.assign(
        line_id=declines["line_id"].to_numpy(), failed_on=declines["booked_on"].to_numpy()
    )


def _statuses(lines, pay, matched, undo, linked, undone) -> pd.DataFrame:
    out = lines.drop(columns=["_order"]).copy()
    out["status"] = np.select(
        [out["duplicate_of"].notna(), out["kind"].eq("decline"), out["kind"].eq("other")],
        ["duplicate", "declined", "ignored"],
        "exception",
    )
    out["debtor_id"], out["method"], out["confidence"] = None, None, np.nan
    o = matched.outcomes
    at = pay.index[o["row"].to_numpy()]  # where each matched payment line sits in ``lines``
    for col in ("status", "debtor_id", "method", "confidence"):
        out.loc[at, col] = o[col].to_numpy()
    done = out["line_id"].isin(linked["line_id"])
    if done.any():
        out.loc[done, "status"] = "applied"
        out.loc[done, "method"] = out.loc[done, "kind"]
        out.loc[done, "confidence"] = 1.0
        by_line = undone.groupby("line_id")["debtor_id"].first()
        out.loc[done, "debtor_id"] = out.loc[done, "line_id"].map(by_line)
    return out


def _record(engine, as_of, lines, allocations, exceptions, declines, instructions) -> None:
    """One transaction: this date's rows replaced, payer accounts learned."""
    booked = lines.set_index("line_id")["booked_on"]
    with engine.begin() as conn:
        for model in (
            ledger.PaymentLine,
            ledger.Allocation,
            ledger.PaymentException,
            ledger.PaymentFailure,
        ):
            conn.execute(sa.delete(model).where(model.as_of == as_of))
        cols = [c.name for c in ledger.PaymentLine.__table__.columns]
        ledger.bulk_insert(conn, ledger.PaymentLine.__table__, lines.assign(as_of=as_of)[cols])
        alloc = allocations.assign(as_of=as_of, booked_on=allocations["line_id"].map(booked))
        cols = [c.name for c in ledger.Allocation.__table__.columns if c.name != "id"]
        ledger.bulk_insert(conn, ledger.Allocation.__table__, alloc[cols])
        exc = exceptions.drop_duplicates("line_id").assign(as_of=as_of, status="open")
        ledger.bulk_insert(
            conn,
            ledger.PaymentException.__table__,
            exc[["line_id", "as_of", "reason", "detail", "status"]],
        )
        if len(instructions):
            fail = instructions.assign(as_of=as_of)
            cols = [c.name for c in ledger.PaymentFailure.__table__.columns]
            ledger.bulk_insert(conn, ledger.PaymentFailure.__table__, fail[cols])
        sure = lines[
            (lines["status"] == "applied")
            & (lines["confidence"] >= 0.95)
            & lines["kind"].eq("payment")
        ]
        sure = sure.assign(account=feeds.normalize_text(sure["payer_account"]))
        sure = sure[sure["account"] != ""]
        one = sure.groupby("account")["debtor_id"].nunique()
        learn = sure[sure["account"].isin(one[one == 1].index)].drop_duplicates("account")
        if len(learn):
            rows = learn[["account", "debtor_id"]].assign(learned_on=as_of).to_dict("records")
            conn.execute(
                ledger.insert_ignore(conn, ledger.PayerAccount.__table__, ["account"]), rows
            )


def _promises(
    cfg: Config, as_of: date, engine: sa.Engine
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    instalments, quarantine = promises.read_promises(cfg, as_of)
    since = (
        pd.to_datetime(instalments["created_on"]).min() if len(instalments) else pd.Timestamp(as_of)
    )
    paid = promises.paid_frame(engine, since.date())
    evaluated = promises.evaluate(instalments, paid, as_of, cfg.payments.promise_grace_days)
    flags = promises.debtor_flags(evaluated, cfg.payments.promise_grace_days)
    if cfg.payments.promises is not None:  # a full export each run: the table is replaced
        with engine.begin() as conn:
            conn.execute(sa.delete(ledger.Instalment))
            ledger.bulk_insert(
                conn,
                ledger.Instalment.__table__,
                evaluated.assign(evaluated_as_of=as_of)[
                    [c.name for c in ledger.Instalment.__table__.columns]
                ],
            )
    return evaluated, flags, quarantine


def _csv(frame: pd.DataFrame) -> bytes:
    """For people to open in a spreadsheet: formula-looking cells neutralized."""
    return quality.neutralize(frame).to_csv(index=False).encode("utf-8")


def reconcile_to_lake(
    cfg: Config,
    as_of: date,
    root: Any,
    engine: sa.Engine,
    *,
    instruct: bool = True,
    validated: dict | None = None,
) -> dict[str, Any]:
    """The daily stage: reconcile, then write the review files to the lake.

    ``instruct`` False (a backfill or a dry run) writes the card retry instructions as a
    preview the processor integration does not pick up: a past date never charges a card.
    ``validated``: ``validate_to_lake``'s keys, to read the day's snapshot from the lake."""
    invoices = None if validated is None else quality.read_snapshots(root, validated)[0]
    r = reconcile(cfg, as_of, engine, invoices)
    part = lake.partition("reconcile", as_of)
    lines, exceptions = r["lines"], r["exceptions"]
    keys = {
        "lines": f"{part}/payment_lines.parquet",
        "allocations": f"{part}/allocations.parquet",
        "flags": f"{part}/debtor_flags.parquet",
        "exceptions": f"{part}/exceptions.csv",
        "retries": f"{part}/retry_instructions{'' if instruct else '.preview'}.csv",
        "instalments": f"{part}/instalments.parquet",
    }
    lake.write_parquet(root / keys["lines"], lines)
    lake.write_parquet(root / keys["allocations"], r["allocations"])
    lake.write_parquet(root / keys["flags"], r["flags"])
    lake.write_parquet(root / keys["instalments"], r["instalments"])
    review = exceptions.merge(lines.drop(columns=["status"]), on="line_id", how="left")
    lake.write_bytes(
        root / keys["exceptions"], _csv(review[list(EXCEPTION_FILE_COLUMNS)]), "text/csv"
    )
    lake.write_bytes(root / keys["retries"], _csv(r["instructions"]), "text/csv")
    if len(r["quarantine"]):
        keys["quarantine"] = lake.partition("quarantine", as_of) + "/payments.parquet"
        lake.write_parquet(root / keys["quarantine"], r["quarantine"].astype(str))
    money = lines[lines["kind"].eq("payment") & lines["duplicate_of"].isna()]
    status = (
        r["instalments"]["status"].value_counts() if len(r["instalments"]) else pd.Series(dtype=int)
    )
    return {
        **keys,
        "payments_matched": int(money["status"].eq("applied").sum()),
        "payments_unmatched": int(money["status"].eq("exception").sum()),
        "lines_read": len(lines),
        "by_method": {str(k): int(v) for k, v in money["method"].value_counts().items()},
        "duplicates": int(lines["duplicate_of"].notna().sum()),
        "reversals": int(lines["kind"].isin(UNDOING).sum()),
        "exceptions_by_reason": {
            str(k): int(v) for k, v in exceptions["reason"].value_counts().items()
        },
        "declines": int(lines["kind"].eq("decline").sum()),
        "retries_by_action": {
            str(k): int(v) for k, v in r["instructions"]["action"].value_counts().items()
        },
        "instalments_by_status": {str(k): int(v) for k, v in status.items()},
        "quarantined": len(r["quarantine"]),
        "seconds": {k: round(v, 3) for k, v in r["seconds"].items()},
    }
