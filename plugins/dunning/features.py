"""Behaviour features of each debtor, computed point in time from the ledger's history.

Why point in time: the risk model is trained on past snapshot dates.  A feature that peeks at a
payment made after the snapshot would make the backtest look better than the model will ever be,
so every fact used for ``as_of`` is dated strictly before it: invoices issued before ``as_of``,
paid dates, payments, contacts and events before ``as_of``.  Later facts are filtered out when
read (in SQL, or by the Parquet reader for the lake mirror, see ``write_mirror``) and again in
pandas when one loaded window serves several dates.

Definitions (``t`` = ``as_of``; "the year" = the 365 days before ``t``; only ``doc_type=invoice``
rows, credit notes are not debts):

===================================  ==========================================================
feature                              definition
===================================  ==========================================================
avg_days_late                        mean of ``paid_date - due_date`` (days, negative = early)
                                     over invoices paid in the year
late_trend                           mean lateness of invoices paid in the last 90 days minus
                                     that of the 275 days before; 0 unless both windows have
                                     payments (positive = getting later)
share_paid_after_first_reminder      of invoices paid in the year, the share paid within 14 days
                                     after the first contact on or after their due date (contacts
                                     are per debtor, so "about them" = the first one after due)
partial_payment_share                of the debtor's payments in the year, the share that equal
                                     no invoice amount of theirs and are below their largest
                                     invoice: part payments.  (The history export only dates
                                     full settlement, so partial payments are seen in payments.)
promises_kept / promises_broken      call outcomes ``promise_to_pay`` in the year whose 14-day
                                     window has closed, kept when a payment arrived within 14
                                     days.  The ledger has no promises table yet; when it does,
                                     this should read it instead of call outcomes.
disputes_12m                         ``dispute_opened`` compliance events in the year
response_rate_<channel>              of the contacts on that channel in the year whose 7-day
                                     window has closed, the share followed by a payment from the
                                     debtor within 7 days.  Payments, not outcomes like
                                     ``clicked`` or ``promise_to_pay``: money is the response that
                                     matters and outcomes are recorded unevenly across channels.
tenure_days                          days since ``debtors.customer_since`` (if known and before
                                     ``t``), else since the first invoice
balance_to_usual_invoice             gross amount of the invoices open at ``t`` divided by the
                                     median invoice amount of the year (gross: the export does
                                     not date partial payments, so netting them would leak)
===================================  ==========================================================

Debtors without history get 0 (a neutral value; ``tenure_days`` 0 tells the model they are new).

Where the facts come from: the ledger's history tables (SQL), or -- for the daily score -- the
Parquet mirror of them that the history load of the same date writes to the lake (``history/
as_of=.../``).  Both become the same Arrow tables and go through the same windowing
(``_window_filter``) and encoding (``_build``), so they give identical features; the tests
compare the two on a generated portfolio.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from dunning import lake
from dunning.ledger import (
    ComplianceEvent,
    ContactAttempt,
    Debtor,
    InvoiceHistory,
    Payment,
)
from dunning.schema import BEHAVIOUR_FEATURES, CHANNELS

log = logging.getLogger(__name__)

YEAR = 365
RECENT = 90
REMINDER_WINDOW = 14
PROMISE_WINDOW = 14
RESPONSE_WINDOW = 7
AGING_COLUMNS = ("overdue_minor", "max_days_past_due", "overdue_count")
_DAY = np.timedelta64(1, "D")


@dataclass
class Facts:
    """History rows of one date window, debtors as integer codes into ``debtors`` (fast groupbys)."""

    debtors: pd.Index  # debtor_id per code
    invoices: pd.DataFrame  # code, issue, due, paid (NaT), amount, invoice (bool)
    payments: pd.DataFrame  # code, day, amount
    contacts: pd.DataFrame  # code, day, channel (index in CHANNELS), promise (bool)
    disputes: pd.DataFrame  # code, day
    first_issue: np.ndarray  # per code: first invoice issue date ever (NaT if none)
    customer_since: np.ndarray  # per code: debtors.customer_since (NaT if unknown)


# --- the facts, as normalized Arrow tables ------------------------------------------------------
#
# Both sources -- the ledger (SQL) and the lake mirror the history load writes -- produce the same
# tables, and one function (``_build``) windows and encodes them, so the two paths cannot drift.
# Debtors are integer codes into an id list that travels with each table: the mirror stores them
# so, and the millions of rows are never hashed as strings again (only the short id lists are).

FACT_SCHEMAS: dict[str, pa.Schema] = {
    "invoices": pa.schema(
        [
            pa.field("debtor", pa.int32()),  # code into the table's debtor ids
            pa.field("issue", pa.date32()),
            pa.field("due", pa.date32()),
            pa.field("paid", pa.date32()),
            pa.field("amount", pa.int64()),
            pa.field("invoice", pa.bool_()),  # doc_type == "invoice" (credit notes are not debt)
        ]
    ),
    "payments": pa.schema(
        [
            pa.field("debtor", pa.int32()),
            pa.field("day", pa.date32()),
            pa.field("amount", pa.int64()),
        ]
    ),
    "contacts": pa.schema(
        [
            pa.field("debtor", pa.int32()),
            pa.field("day", pa.date32()),  # UTC date of ``at``
            pa.field("channel", pa.string()),
            pa.field("promise", pa.bool_()),  # outcome == "promise_to_pay"
        ]
    ),
    "disputes": pa.schema([pa.field("debtor", pa.int32()), pa.field("day", pa.date32())]),
    # first invoice issue date per debtor (the mirror: one row per invoice, the minimum is taken)
    "first": pa.schema([pa.field("debtor", pa.int32()), pa.field("first_issue", pa.date32())]),
    "since": pa.schema([pa.field("debtor", pa.int32()), pa.field("customer_since", pa.date32())]),
}


@dataclass
class _Coded:
    """One facts table (``FACT_SCHEMAS``) and the debtor id of each of its codes."""

    rows: pa.Table
    ids: pa.Array


def _date32(arr: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """ISO text (SQLite), dates or timestamps (PostgreSQL, pandas) to the UTC calendar date."""
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.date32())
    if pa.types.is_date32(arr.type):
        return arr
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = pc.strptime(pc.utf8_slice_codeunits(arr, 0, 10), "%Y-%m-%d", "s", error_is_null=True)
    elif pa.types.is_timestamp(arr.type) and arr.type.tz is not None:
        arr = arr.cast(pa.timestamp(arr.type.unit, tz="UTC")).cast(pa.timestamp(arr.type.unit))
    if pa.types.is_timestamp(arr.type):
        arr = pc.floor_temporal(arr, unit="day")
    return arr.cast(pa.date32())


def _normalize(name: str, columns: dict[str, pa.Array | pa.ChunkedArray]) -> _Coded:
    """Columns as fetched or loaded (``debtor_id`` text, dates in any form) to ``FACT_SCHEMAS``."""
    debtor = columns["debtor_id"]
    if isinstance(debtor, pa.ChunkedArray):
        debtor = debtor.combine_chunks()
    encoded = pc.dictionary_encode(debtor.cast(pa.string()))  # nulls stay null codes
    out = []
    for field in FACT_SCHEMAS[name]:
        if field.name == "debtor":
            out.append(encoded.indices.cast(pa.int32()))
        elif pa.types.is_date32(field.type):
            out.append(_date32(columns[field.name]))
        else:
            out.append(columns[field.name].cast(field.type))
    return _Coded(pa.Table.from_arrays(out, schema=FACT_SCHEMAS[name]), encoded.dictionary)


def _raw(col: sa.ColumnElement, name: str | None = None) -> sa.ColumnElement:
    """Skip SQLAlchemy's per-row date parsing (SQLite text): Arrow parses the column at once."""
    return sa.type_coerce(col, sa.String).label(name or col.key)


def _fetch(conn: sa.Connection, query: sa.Select) -> dict[str, pa.Array]:
    """Rows to one Arrow array per column (types inferred in C: text, ints, dates).

    Why not ``pd.DataFrame(rows)``: pandas probes every Row object for attributes (a SQLAlchemy
    exception each) and keeps Python objects; at 5M rows that was most of the feature time.
    """
    enabled = gc.isenabled()
    gc.disable()  # millions of fresh tuples would trigger full collections again and again
    try:
        result = conn.execute(query)
        keys = list(result.keys())
        rows = result.fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in keys]
        del rows
        return {k: pa.array(v) for k, v in zip(keys, columns, strict=True)}
    finally:
        if enabled:
            gc.enable()


def timestamp_window(col: sa.ColumnElement, start: datetime, end: datetime) -> sa.ColumnElement:
    """``start <= col < end`` (UTC bounds) that also holds where SQLite compares timestamps as
    text: values stored without microseconds ('... 00:00:00') sort before a bound rendered with
    them ('... 00:00:00.000000'), which let a contact at midnight of ``end`` count as before it
    and dropped one at midnight of ``start``.  Bounds a microsecond inside are right either way.
    """
    tick = timedelta(microseconds=1)
    return sa.and_(col > start - tick, col <= end - tick)


def _sql_tables(engine: sa.Engine, lo: date, end: date, names: set[str]) -> dict[str, _Coded]:
    """The facts ``names`` (plus ``first`` with invoices, and always ``since``) from the ledger.

    SQL keeps only facts dated before ``end`` and recent enough to matter at ``lo``.
    """
    ih, pay, ca, ev = (
        t.__table__.c for t in (InvoiceHistory, Payment, ContactAttempt, ComplianceEvent)
    )
    dc = Debtor.__table__.c
    end_ts = pd.Timestamp(end).tz_localize("UTC").to_pydatetime()
    lo_ts = pd.Timestamp(lo).tz_localize("UTC").to_pydatetime()
    queries: dict[str, sa.Select] = {
        "invoices": sa.select(
            ih.debtor_id,
            _raw(ih.issue_date, "issue"),
            _raw(ih.due_date, "due"),
            _raw(ih.paid_date, "paid"),
            ih.amount_minor.label("amount"),
            (ih.doc_type == "invoice").label("invoice"),
        ).where(
            ih.issue_date < end,
            sa.or_(ih.issue_date >= lo, ih.paid_date.is_(None), ih.paid_date >= lo),
        ),
        "first": sa.select(ih.debtor_id, _raw(sa.func.min(ih.issue_date), "first_issue"))
        .where(ih.issue_date < end)
        .group_by(ih.debtor_id),
        "payments": sa.select(
            pay.debtor_id, _raw(pay.paid_on, "day"), pay.amount_minor.label("amount")
        ).where(pay.paid_on < end, pay.paid_on >= lo, pay.debtor_id.is_not(None)),
        "contacts": sa.select(
            ca.debtor_id,
            _raw(ca.at, "day"),
            ca.channel,
            (ca.outcome == "promise_to_pay").label("promise"),
        ).where(timestamp_window(ca.at, lo_ts, end_ts)),
        "disputes": sa.select(ev.debtor_id, _raw(ev.effective_date, "day")).where(
            ev.event == "dispute_opened", ev.effective_date < end, ev.effective_date >= lo
        ),
        "since": sa.select(dc.debtor_id, _raw(dc.customer_since)).where(
            dc.customer_since.is_not(None)
        ),
    }
    wanted = {*names, "since"} | ({"first"} if "invoices" in names else set())
    with engine.connect() as conn:
        return {
            name: _normalize(name, _fetch(conn, query))
            for name, query in queries.items()
            if name in wanted
        }


# --- the lake mirror ----------------------------------------------------------------------------
#
# Why: reading ~14M history rows out of the ledger through a driver cost the daily score stage
# most of a minute and several GB at 1M open invoices.  The history load has those rows in memory
# already, so it also writes them here, columnar, typed and with debtors as integer codes; the
# daily score reads them back with Arrow in about a second.  The ledger stays the source of
# truth: the weekly training, and any date without a mirror, read SQL -- with the same features.

HISTORY_AREA = "history"
MANIFEST = "_manifest.json"
MIRROR_VERSION = 1  # bump when the files change: older mirrors are then ignored, not misread
# mirror dataset -> the history export (``dunning.history.DATASETS``) it is made from
MIRRORED: dict[str, str] = {
    "invoices": "invoices",
    "payments": "payments",
    "contacts": "contacts",
    "disputes": "compliance_events",
}
_IDS = pa.schema([pa.field("debtor_id", pa.string())])
_SORT_DATE = {"invoices": "due", "payments": "day", "contacts": "day", "disputes": "day"}
# Mirrored beyond the features' columns: what the plan's cadence reads (``latest_contacts``).
_EXTRA = {
    "contacts": [pa.field("template", pa.string()), pa.field("at", pa.timestamp("s", tz="UTC"))]
}


@dataclass
class MirrorPart:
    """One dataset of the mirror, made by ``mirror_files`` while the history load runs."""

    name: str  # mirror dataset (a key of MIRRORED)
    table: str  # the ledger table it mirrors
    table_rows: int  # rows the load left in that table: checked before the mirror is used
    rows: int  # rows mirrored
    files: dict[str, bytes]  # file name -> Parquet


def mirror_folder(root: Any, as_of: date) -> Any:
    """``history/as_of=YYYY-MM-DD``: the facts as the history load of that date left the ledger."""
    return root / lake.partition(HISTORY_AREA, as_of)


def _series_date32(series: pd.Series) -> pa.Array:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    days = pd.to_datetime(series).to_numpy("datetime64[s]").astype("datetime64[D]")
    return pa.array(days, type=pa.date32(), from_pandas=True)


def _mirror_columns(dataset: str, frame: pd.DataFrame) -> tuple[str, dict[str, pa.Array]]:
    def text(name: str) -> pa.Array:
        return pa.Array.from_pandas(frame[name], type=pa.string())

    def equals(name: str, value: str) -> pa.Array:
        return pa.array(frame[name].eq(value).fillna(False).to_numpy(bool))

    if dataset == "invoices":
        return "invoices", {
            "debtor_id": text("debtor_id"),
            "issue": _series_date32(frame["issue_date"]),
            "due": _series_date32(frame["due_date"]),
            "paid": _series_date32(frame["paid_date"]),
            "amount": pa.Array.from_pandas(frame["amount_minor"], type=pa.int64()),
            "invoice": equals("doc_type", "invoice"),
        }
    if dataset == "payments":
        frame = frame[frame["debtor_id"].notna()]
        return "payments", {
            "debtor_id": text("debtor_id"),
            "day": _series_date32(frame["paid_on"]),
            "amount": pa.Array.from_pandas(frame["amount_minor"], type=pa.int64()),
        }
    if dataset == "contacts":
        at = frame["at"].dt.tz_convert("UTC").dt.floor("s")  # the ledger keeps whole seconds
        return "contacts", {
            "debtor_id": text("debtor_id"),
            "day": _series_date32(frame["at"]),
            "channel": text("channel"),
            "promise": equals("outcome", "promise_to_pay"),
            "template": text("template"),
            "at": pa.Array.from_pandas(at, type=pa.timestamp("s", tz="UTC")),
        }
    if dataset == "compliance_events":
        frame = frame[frame["event"].eq("dispute_opened").fillna(False)]
        return "disputes", {
            "debtor_id": text("debtor_id"),
            "day": _series_date32(frame["effective_date"]),
        }
    raise ValueError(f"no mirror for history dataset {dataset!r}")


def mirror_files(dataset: str, frame: pd.DataFrame, table: str) -> MirrorPart:
    """A history export's validated rows, exactly as loaded into the ledger ``table``, as the
    facts ``load_facts`` reads: the rows with debtor codes, and the debtor ids.  Rows the SQL path
    never reads at all (payments without a debtor, events other than ``dispute_opened``) are
    left out."""
    name, columns = _mirror_columns(dataset, frame)
    # Sorted by debtor id, then date: codes then follow id order, which the sorted debtors of
    # ``_build`` keep, so the feature searches find their rows already in order (no re-sort).
    ordered = pa.table(columns).sort_by(
        [("debtor_id", "ascending"), (_SORT_DATE[name], "ascending")]
    )
    coded = _normalize(name, dict(zip(ordered.column_names, ordered.columns, strict=True)))
    rows = coded.rows
    for field in _EXTRA.get(name, []):
        rows = rows.append_column(field, ordered[field.name].cast(field.type))
    files = {
        f"{name}.parquet": lake.table_bytes(rows),
        f"{name}_debtors.parquet": lake.table_bytes(pa.Table.from_arrays([coded.ids], schema=_IDS)),
    }
    return MirrorPart(name, table, len(frame), rows.num_rows, files)


def drop_mirror(root: Any, as_of: date) -> None:
    """Forget the mirror of ``as_of`` before its ledger tables change: until a new one is
    complete, readers use the ledger (a failed or half-written reload never serves stale facts)."""
    path = mirror_folder(root, as_of) / MANIFEST
    if path.exists():
        path.unlink()


def write_mirror(root: Any, as_of: date, parts: list[MirrorPart]) -> str:
    """Write each dataset's files, then the manifest that makes them visible; returns the
    manifest's key.  Datasets without a part (history exports not configured: their tables were
    left as they were) are read from SQL."""
    folder = mirror_folder(root, as_of)
    datasets = {}
    for part in parts:
        for file, data in part.files.items():
            lake.write_bytes(folder / file, data)
        datasets[part.name] = {
            "files": sorted(part.files),
            "rows": part.rows,
            "table": part.table,
            "table_rows": part.table_rows,
        }
    manifest = {"version": MIRROR_VERSION, "as_of": as_of.isoformat(), "datasets": datasets}
    lake.write_json(folder / MANIFEST, manifest)
    return f"{lake.partition(HISTORY_AREA, as_of)}/{MANIFEST}"


def usable_mirror(engine: sa.Engine, folder: Any) -> set[str]:
    """The datasets of the mirror in ``folder`` that still describe the ledger.

    The history tables are only meant to change through ``load_history``, which rewrites the
    mirror; as a cheap guard against anything else adding or removing rows since (a feed
    appending payments, contacts recorded as they are made), a dataset whose table no longer
    has the row count the load left is read from SQL instead.
    """
    try:
        manifest = lake.read_json(folder / MANIFEST)
    except FileNotFoundError:
        return set()
    if manifest.get("version") != MIRROR_VERSION:
        return set()
    datasets = manifest["datasets"]
    tables = {d["table"] for d in datasets.values()}
    with engine.connect() as conn:
        counts = {
            t: conn.execute(sa.select(sa.func.count()).select_from(sa.table(t))).scalar_one()
            for t in tables
        }
    usable = {n for n, d in datasets.items() if counts[d["table"]] == d["table_rows"]}
    if usable != set(datasets):
        log.warning(
            "history mirror %s is stale for %s (ledger rows changed since the load): reading SQL",
            manifest["as_of"],
            sorted(set(datasets) - usable),
        )
    return usable


def _read_ids(folder: Any, name: str) -> pa.Array:
    return lake.read_table(folder / f"{name}_debtors.parquet")["debtor_id"].combine_chunks()


def _mirror_tables(folder: Any, names: list[str], lo: date, end: date) -> dict[str, _Coded]:
    """The mirrored facts ``names``, filtered by date while Parquet is read (``_window``)."""
    out: dict[str, _Coded] = {}
    for name in names:
        ids = _read_ids(folder, name)
        path, columns = folder / f"{name}.parquet", FACT_SCHEMAS[name].names
        if name == "invoices":  # every invoice before end: the first issue date per debtor too
            rows = lake.read_table(path, columns, filters=pc.field("issue") < end)
            first = pa.table({"debtor": rows["debtor"], "first_issue": rows["issue"]})
            out["first"] = _Coded(first.cast(FACT_SCHEMAS["first"]), ids)
            rows = rows.filter(_window_filter(name, lo, end))
        else:
            rows = lake.read_table(path, columns, filters=_window_filter(name, lo, end))
        out[name] = _Coded(rows.cast(FACT_SCHEMAS[name]), ids)
    return out


def latest_contacts(
    engine: sa.Engine, root: Any, as_of: date, start: datetime, end: datetime
) -> pd.DataFrame | None:
    """From the mirror of ``as_of``: the latest contact ``at`` per debtor and template among
    contacts in ``[start, end)`` (UTC), as ``dunning.planning.recent_contacts`` reads it from
    the ledger; None when there is no usable mirror (the caller then asks the ledger)."""
    folder = mirror_folder(root, as_of)
    if "contacts" not in usable_mirror(engine, folder):
        return None
    at = pc.field("at")
    rows = lake.read_table(
        folder / "contacts.parquet",
        ["debtor", "template", "at"],
        filters=(at >= pa.scalar(start, pa.timestamp("s", tz="UTC")))
        & (at < pa.scalar(end, pa.timestamp("s", tz="UTC"))),
    )
    latest = rows.group_by(["debtor", "template"], use_threads=False).aggregate([("at", "max")])
    ids = _read_ids(folder, "contacts")
    frame = pd.DataFrame(
        {
            "debtor_id": pd.array(ids.take(latest["debtor"]), dtype="str"),
            "template": pd.array(latest["template"], dtype="str"),
            "at": latest["at_max"].cast(pa.timestamp("us", tz="UTC")).to_pandas(),
        }
    )
    return frame.sort_values(["debtor_id", "template"], ignore_index=True)


# --- facts --------------------------------------------------------------------------------------


def _window_filter(name: str, lo: date, end: date) -> pc.Expression | None:
    """What both sources must agree on: facts dated before ``end`` and recent enough at ``lo``
    (invoices: issued before ``end`` and issued, paid or still open since ``lo``)."""
    if name == "invoices":
        return (pc.field("issue") < end) & (
            (pc.field("issue") >= lo) | pc.field("paid").is_null() | (pc.field("paid") >= lo)
        )
    if name in ("payments", "contacts", "disputes"):
        return (pc.field("day") < end) & (pc.field("day") >= lo) & pc.field("debtor").is_valid()
    return None


def _window(name: str, coded: _Coded, lo: date, end: date) -> _Coded:
    keep = _window_filter(name, lo, end)
    return coded if keep is None else _Coded(coded.rows.filter(keep), coded.ids)


def _days(arr: pa.ChunkedArray) -> np.ndarray:
    """date32 to datetime64[s] (UTC midnight, NaT for null): the unit the feature math uses."""
    return arr.cast(pa.timestamp("s")).to_numpy()


def _ints(arr: pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(arr, 0).to_numpy()


def _flags(arr: pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(arr, False).to_numpy()


def _local(coded: _Coded) -> np.ndarray:
    """The table's own debtor codes; ``len(ids)`` for a missing debtor."""
    codes = coded.rows["debtor"]
    if codes.null_count:
        codes = pc.fill_null(codes, len(coded.ids))
    return codes.to_numpy()


def _build(tables: dict[str, _Coded]) -> Facts:
    """Normalized, windowed tables to ``Facts``: debtors (sorted ids) as codes.

    The debtors are those with an invoice before the window's end or a payment in it; each
    table's codes are mapped to theirs through its (short) id list.
    """
    present = []
    for name in ("invoices", "first", "payments"):
        coded = tables[name]
        seen = np.zeros(len(coded.ids) + 1, dtype=bool)
        seen[_local(coded)] = True
        present.append(coded.ids.filter(seen[:-1]))
    id_set = pc.unique(pa.concat_arrays(present))
    id_set = pc.take(id_set, pc.sort_indices(id_set))
    ids = pd.Index(id_set.to_pylist(), dtype="str")

    mappings: dict[int, np.ndarray] = {}  # per id list (the mirror's invoices and first share)

    def code(coded: _Coded) -> np.ndarray:
        key = id(coded.ids)
        if key not in mappings:
            found = pc.fill_null(pc.index_in(coded.ids, value_set=id_set), -1).to_numpy()
            mappings[key] = np.append(found.astype("int64"), -1)
        return mappings[key][_local(coded)]

    inv, pays = tables["invoices"].rows, tables["payments"].rows
    cons, disp = tables["contacts"].rows, tables["disputes"].rows
    invoices = pd.DataFrame(
        {
            "code": code(tables["invoices"]),
            "issue": _days(inv["issue"]),
            "due": _days(inv["due"]),
            "paid": _days(inv["paid"]),
            "amount": _ints(inv["amount"]),
            "invoice": _flags(inv["invoice"]),
        },
        copy=False,
    )
    payments = pd.DataFrame(
        {
            "code": code(tables["payments"]),
            "day": _days(pays["day"]),
            "amount": _ints(pays["amount"]),
        },
        copy=False,
    )
    channel = pc.index_in(cons["channel"], value_set=pa.array(CHANNELS))
    contacts = pd.DataFrame(
        {
            "code": code(tables["contacts"]),
            "day": _days(cons["day"]),
            "channel": pc.fill_null(channel, -1).to_numpy(),
            "promise": _flags(cons["promise"]),
        },
        copy=False,
    )
    disputes = pd.DataFrame(
        {"code": code(tables["disputes"]), "day": _days(disp["day"])}, copy=False
    )
    # first issue date per debtor: the minimum (the mirror has a row per invoice, SQL one per debtor)
    never = np.iinfo("int64").max
    first = tables["first"].rows["first_issue"].cast(pa.int32()).cast(pa.int64())  # since 1970
    earliest = np.full(len(ids), never)
    np.minimum.at(earliest, code(tables["first"]), pc.fill_null(first, never).to_numpy())
    first_issue = earliest.astype("datetime64[D]").astype("datetime64[s]")
    first_issue[earliest == never] = np.datetime64("NaT")
    customer_since = np.full(len(ids), np.datetime64("NaT"), dtype="datetime64[s]")
    sc = code(tables["since"])
    hit = sc >= 0
    customer_since[sc[hit]] = _days(tables["since"].rows["customer_since"])[hit]
    return Facts(
        debtors=ids,
        invoices=invoices,
        payments=payments[payments["code"] >= 0],
        contacts=contacts[contacts["code"] >= 0],
        disputes=disputes[disputes["code"] >= 0],
        first_issue=first_issue,
        customer_since=customer_since,
    )


def load_facts(engine: sa.Engine, start: date, end: date, mirror: Any | None = None) -> Facts:
    """Everything features for dates in ``[start, end]`` need, read once (training uses many dates).

    Only facts dated before ``end`` and recent enough to matter at ``start`` are kept.  With
    ``mirror`` (a ``mirror_folder``) the datasets its manifest lists come from the lake and only
    the rest (and ``debtors.customer_since``, which the daily snapshot load maintains) from SQL.
    """
    lo = start - timedelta(days=YEAR + 1)
    usable = usable_mirror(engine, mirror) if mirror is not None else set()
    mirrored = [n for n in MIRRORED if n in usable]
    tables = _mirror_tables(mirror, mirrored, lo, end) if mirrored else {}
    from_sql = _sql_tables(engine, lo, end, set(MIRRORED) - set(mirrored))
    tables |= {name: _window(name, coded, lo, end) for name, coded in from_sql.items()}
    log.info(
        "history facts %s..%s: %s from the lake mirror, the rest from the ledger",
        start,
        end,
        mirrored or "nothing",
    )
    return _build(tables)


def behaviour_features(
    engine: sa.Engine,
    as_of: date,
    debtor_ids: list[str] | pd.Index | None = None,
    root: Any | None = None,
) -> pd.DataFrame:
    """``debtor_id`` + ``schema.BEHAVIOUR_FEATURES`` as of ``as_of`` (facts before it only).

    Without ``debtor_ids``: every debtor with an invoice issued before ``as_of``.  With the lake
    ``root``, the history mirror of ``as_of`` is used when the history load wrote one.
    """
    mirror = mirror_folder(root, as_of) if root is not None else None
    return features_from_facts(load_facts(engine, as_of, as_of, mirror), as_of, debtor_ids)


def _mean(codes: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    count = np.bincount(codes, minlength=n).astype("float64")
    total = np.bincount(codes, weights=values.astype("float64"), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), 0.0), count


# Per-debtor lookups ("the debtor's first contact on or after the due date", "a payment within 7
# days") as one sorted int64 key per row, debtor code in the high 32 bits and the day in the low:
# a binary search over millions of rows instead of pandas' merge_asof by group, which re-sorted
# and hashed the same frames for each question and was most of the feature time at 1M invoices.
_DAY_BIAS = 1 << 31  # day numbers (days since 1970, may be negative) made non-negative
_LOW = (1 << 32) - 1
_NEVER = 1 << 62  # "no such day": after every real day, so "<= day + window" is False


def _day_numbers(days: np.ndarray) -> np.ndarray:
    """datetime64 (no NaT) to int64 days since 1970."""
    return days.astype("datetime64[D]").astype("int64")


def _keys(codes: np.ndarray, day_numbers: np.ndarray) -> np.ndarray:
    return (codes.astype("int64") << 32) | (day_numbers + _DAY_BIAS)


def _is_sorted(keys: np.ndarray) -> bool:
    return len(keys) < 2 or bool((keys[1:] >= keys[:-1]).all())


def _search(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``np.searchsorted`` (left), with the queries visited in sorted order: each search then
    starts where the last ended, instead of a cache miss per step (measured 10x at 5M rows)."""
    if _is_sorted(queries):
        return np.searchsorted(sorted_keys, queries)
    order = np.argsort(queries)
    out = np.empty(len(queries), dtype="int64")
    out[order] = np.searchsorted(sorted_keys, queries[order])
    return out


def _next_on_or_after(sorted_keys: np.ndarray, codes: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Per query (code, day number): the day number of the same debtor's first row on or after
    that day in ``sorted_keys`` (``_keys``, sorted), or ``_NEVER`` when there is none."""
    at = _search(sorted_keys, _keys(codes, days))
    found = np.full(len(codes), _NEVER, dtype="int64")
    inside = at < len(sorted_keys)
    hit = sorted_keys[at[inside]]
    same = (hit >> 32) == codes[inside]
    rows = np.flatnonzero(inside)[same]
    found[rows] = (hit[same] & _LOW) - _DAY_BIAS
    return found


def _followed_by_payment(
    codes: np.ndarray, days: np.ndarray, payment_keys: np.ndarray, window: int
) -> np.ndarray:
    """Per event (code, day number): did the debtor pay on that day or within ``window`` after."""
    return _next_on_or_after(payment_keys, codes, days) <= days + window


_AMOUNT_BITS = 40  # amounts in minor units below 2**40 (11 billion in a 2-decimal currency)
_AMOUNT_MASK = (1 << _AMOUNT_BITS) - 1


def _amount_keys(codes: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """(code, amount) as one int64; amounts outside [0, 2**40) are clipped into it."""
    return (codes.astype("int64") << _AMOUNT_BITS) | np.clip(amounts, 0, _AMOUNT_MASK)


def _fits(amounts: np.ndarray) -> bool:
    return not len(amounts) or (amounts.min() >= 0 and amounts.max() <= _AMOUNT_MASK)


def _group_median(codes: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Median of ``values`` per code (0 where a code has none), by one sort: pandas' groupby
    median on millions of rows cost seconds."""
    out = np.zeros(n)
    if not len(codes):
        return out
    if _fits(values):  # one int64 sort instead of a two-key lexsort
        keys = np.sort(_amount_keys(codes, values))
        c, v = keys >> _AMOUNT_BITS, (keys & _AMOUNT_MASK).astype("float64")
    else:
        order = np.lexsort((values, codes))
        c, v = codes[order], values[order].astype("float64")
    count = np.bincount(c, minlength=n)
    start = np.concatenate(([0], np.cumsum(count)[:-1]))
    has = np.flatnonzero(count)
    lo = start[has] + (count[has] - 1) // 2
    hi = start[has] + count[has] // 2
    out[has] = (v[lo] + v[hi]) / 2
    return out


def features_from_facts(
    facts: Facts, as_of: date, debtor_ids: list[str] | pd.Index | None = None
) -> pd.DataFrame:
    """The feature table at ``as_of`` from preloaded facts (see the module docstring).

    Plain numpy over the facts' columns: boolean masks, bincounts and binary searches, no
    per-debtor Python and no DataFrame copies of millions of rows.
    """
    t = np.datetime64(as_of, "s")
    year_ago = t - YEAR * _DAY
    today = _day_numbers(np.array([t]))[0]
    n = len(facts.debtors)
    out: dict[str, np.ndarray] = {}

    inv = facts.invoices
    keep = (inv["issue"].to_numpy() < t) & inv["invoice"].to_numpy()
    i_code = inv["code"].to_numpy()[keep]
    i_issue = inv["issue"].to_numpy()[keep]
    i_due = inv["due"].to_numpy()[keep]
    i_paid = inv["paid"].to_numpy()[keep]
    i_amount = inv["amount"].to_numpy()[keep]

    is_paid = (i_paid < t) & (i_paid >= year_ago)  # NaT compares False
    p_code, p_due, p_paid = i_code[is_paid], i_due[is_paid], i_paid[is_paid]
    late = (p_paid - p_due) / _DAY
    out["avg_days_late"], _ = _mean(p_code, late, n)
    recent = p_paid >= t - RECENT * _DAY
    recent_mean, recent_n = _mean(p_code[recent], late[recent], n)
    prior_mean, prior_n = _mean(p_code[~recent], late[~recent], n)
    out["late_trend"] = np.where((recent_n > 0) & (prior_n > 0), recent_mean - prior_mean, 0.0)

    con = facts.contacts
    before = con["day"].to_numpy() < t
    contact_keys = _keys(
        con["code"].to_numpy()[before], _day_numbers(con["day"].to_numpy()[before])
    )
    # by debtor and day (the mirror's order already), so searches from contacts run in order
    order = slice(None) if _is_sorted(contact_keys) else np.argsort(contact_keys)
    contact_keys = contact_keys[order]
    c_code = con["code"].to_numpy()[before][order]
    c_day = _day_numbers(con["day"].to_numpy()[before][order])
    c_channel = con["channel"].to_numpy()[before][order]
    c_promise = con["promise"].to_numpy()[before][order]
    pay = facts.payments
    before = pay["day"].to_numpy() < t
    y_code = pay["code"].to_numpy()[before]
    y_day = _day_numbers(pay["day"].to_numpy()[before])
    y_amount = pay["amount"].to_numpy()[before]
    payment_keys = _keys(y_code, y_day)
    if not _is_sorted(payment_keys):
        payment_keys = np.sort(payment_keys)

    # the first contact on or after the due date; paid within REMINDER_WINDOW days after it
    first = _next_on_or_after(contact_keys, p_code, _day_numbers(p_due))
    paid_day = _day_numbers(p_paid)
    after = (first <= paid_day) & (paid_day <= first + REMINDER_WINDOW)
    out["share_paid_after_first_reminder"], _ = _mean(p_code, after, n)

    in_year = y_day >= today - YEAR
    pay_code, pay_amount = y_code[in_year], y_amount[in_year]
    amount_key = np.sort(_amount_keys(i_code, i_amount))  # (debtor, amount) of every invoice
    pay_key = _amount_keys(pay_code, pay_amount)
    at = _search(amount_key, pay_key).clip(max=max(len(amount_key) - 1, 0))
    matches = amount_key[at] == pay_key if len(amount_key) else np.zeros(len(pay_key), bool)
    largest = np.zeros(n, dtype="int64")  # largest invoice per debtor (0 if none is positive)
    if not _fits(i_amount):
        np.maximum.at(largest, i_code, i_amount)
    elif len(amount_key):  # the last key of each debtor's run in the sorted keys
        key_code = amount_key >> _AMOUNT_BITS
        last = np.flatnonzero(np.append(key_code[1:] != key_code[:-1], True))
        largest[key_code[last]] = amount_key[last] & _AMOUNT_MASK
    partial = ~matches & (pay_amount < largest[pay_code])
    out["partial_payment_share"], _ = _mean(pay_code, partial, n)

    promise = c_promise & (c_day >= today - YEAR) & (c_day < today - PROMISE_WINDOW)
    kept = _followed_by_payment(c_code[promise], c_day[promise], payment_keys, PROMISE_WINDOW)
    codes = c_code[promise]
    out["promises_kept"] = np.bincount(codes[kept], minlength=n).astype("float64")
    out["promises_broken"] = np.bincount(codes[~kept], minlength=n).astype("float64")

    d_day = facts.disputes["day"].to_numpy()
    in_year = (d_day < t) & (d_day >= year_ago)
    disputes = facts.disputes["code"].to_numpy()[in_year]
    out["disputes_12m"] = np.bincount(disputes, minlength=n).astype("float64")

    window = (c_day >= today - YEAR) & (c_day < today - RESPONSE_WINDOW)
    wc, wch = c_code[window], c_channel[window]
    responded = _followed_by_payment(wc, c_day[window], payment_keys, RESPONSE_WINDOW)
    for i, channel in enumerate(CHANNELS):
        on = wch == i
        out[f"response_rate_{channel}"], _ = _mean(wc[on], responded[on], n)

    since = facts.customer_since.copy()
    unknown = np.isnat(since) | (since >= t)
    since[unknown] = facts.first_issue[unknown]
    tenure = (t - since) / _DAY
    out["tenure_days"] = np.where(np.isnat(since) | (since >= t), 0.0, tenure)

    open_now = np.isnat(i_paid) | (i_paid >= t)
    balance = np.bincount(i_code[open_now], weights=i_amount[open_now], minlength=n)
    year_inv = i_issue >= year_ago
    usual = _group_median(i_code[year_inv], i_amount[year_inv], n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["balance_to_usual_invoice"] = np.where(usual > 0, balance / usual, 0.0)

    frame = pd.DataFrame(out, index=facts.debtors)[list(BEHAVIOUR_FEATURES)].astype("float64")
    if debtor_ids is None:
        has_invoice = np.zeros(n, dtype=bool)
        has_invoice[i_code] = True
        frame = frame[has_invoice]
    else:
        frame = frame.reindex(pd.Index(debtor_ids, dtype="str"), fill_value=0.0)
    frame.index.name = "debtor_id"
    return frame.reset_index()


def overdue_at(facts: Facts, as_of: date) -> pd.DataFrame:
    """Invoices overdue at ``as_of``: issued and due before it, not paid before it.

    Columns: code, debtor_id, due, paid (NaT = never), amount, days_past_due.  Gross amounts,
    for the same reason as ``balance_to_usual_invoice``.
    """
    t = np.datetime64(as_of, "s")
    inv = facts.invoices
    rows = inv[
        inv["invoice"]
        & (inv["issue"] < t)
        & (inv["due"] < t)
        & (inv["paid"].isna() | (inv["paid"] >= t))
        & (inv["amount"] > 0)
    ]
    return rows.assign(
        debtor_id=facts.debtors[rows["code"].to_numpy()],
        days_past_due=((t - rows["due"]) / _DAY).astype("int64"),
    )


def aging_features(overdue: pd.DataFrame) -> pd.DataFrame:
    """Per debtor: overdue_minor, max_days_past_due, overdue_count (the daily view's names)."""
    grouped = overdue.groupby("debtor_id", sort=True)
    return pd.DataFrame(
        {
            "overdue_minor": grouped["amount"].sum().astype("float64"),
            "max_days_past_due": grouped["days_past_due"].max().astype("float64"),
            "overdue_count": grouped.size().astype("float64"),
        }
    ).rename_axis("debtor_id")
