"""Load the AR system's history exports (invoices, payments, contacts, compliance events).

Why: behaviour features and the risk model learn from the past, and the past lives in the AR
system, not in our daily snapshots.  The exports are *full* dumps, so each load replaces the
ledger's history tables in one transaction: a retried or re-run load gives the same ledger.

Rows are checked with the same vectorized parsers and reason codes as the daily validation
(``dunning.quality``); a bad row goes to ``quarantine/as_of=.../history.parquet`` with its file,
line, field and reason -- nothing is dropped silently.  Money is stored in exact minor units.

The rows loaded also go to the lake as the behaviour-feature facts (``history/as_of=...``, see
``dunning.features.write_mirror``), so the daily score does not read millions of rows back
out of the ledger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from dunning import features, lake, ledger, quality
from dunning.compliance import CONSENT_EVENTS, KNOWN_EVENTS, OPT_OUT_EVENTS
from dunning.config import Config, FileSource, HistoryQuery, NumberFormat
from dunning.schema import CHANNELS, FORMULA_PATTERN, SOURCE_COLUMNS
from dunning.sources import SourceError, _read_csv_text, read_query

log = logging.getLogger(__name__)

# Rows handed to the driver per batch: bounds the memory of the object-dtype copy it needs.
LOAD_CHUNK = 500_000
EVENT_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
CHANNEL_EVENTS = (*OPT_OUT_EVENTS, *CONSENT_EVENTS)
# The designated-window detail the compliance engine reads (weekdays optional: every day).
WINDOW_PATTERN = (
    r'^\{\s*(?:"weekdays"\s*:\s*\[[0-6](?:\s*,\s*[0-6])*\]\s*,\s*)?'
    r'"start"\s*:\s*"(?:[01]\d|2[0-3]):[0-5]\d"\s*,\s*"end"\s*:\s*"(?:[01]\d|2[0-3]):[0-5]\d"\s*\}$'
)

# dataset -> (ledger table, columns the export must have)
DATASETS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "invoices": (
        ledger.InvoiceHistory,
        (
            "invoice_id",
            "debtor_id",
            "doc_type",
            "issue_date",
            "due_date",
            "currency",
            "amount",
            "open_amount",
            "paid_date",
            "disputed",
        ),
    ),
    "payments": (
        ledger.Payment,
        ("payment_id", "debtor_id", "paid_on", "currency", "amount", "method", "reference"),
    ),
    "contacts": (
        ledger.ContactAttempt,
        (
            "contact_id",
            "debtor_id",
            "at",
            "channel",
            "template",
            "outcome",
            "connected",
            "conversation",
        ),
    ),
    "compliance_events": (
        ledger.ComplianceEvent,
        ("debtor_id", "event", "channel", "effective_date", "detail"),
    ),
}


def load_history(cfg: Config, engine: sa.Engine, root: Any, as_of: date) -> dict:
    """Validate the configured history exports and replace the ledger's history tables.

    Returns ``{"as_of", "read": {dataset: rows}, "loaded": {...}, "quarantined": {...},
    "rows_quarantined", "quarantine": lake key, "mirror": lake key of the features mirror's
    manifest, "seconds": {...}}``.  Datasets not configured are skipped and their tables left as
    they are (and read from the ledger by the features).  Raises ``SourceGateError`` (nothing
    replaced, no mirror for ``as_of``) when an export has more bad rows than
    ``gates.max_quarantine_share``.
    """
    read: dict[str, int] = {}
    loaded: dict[str, int] = {}
    quarantined: dict[str, int] = {}
    seconds: dict[str, float] = {}
    quarantines: list[pd.DataFrame] = []
    mirror: list[features.MirrorPart] = []  # the features' lake mirror, written after commit
    origins: dict[str, str] = {}  # dataset -> file or query, for gate messages
    features.drop_mirror(root, as_of)
    # One transaction for every table: readers see the old history or the new, never a mix.
    # Each export is validated and inserted in turn, so only one is in memory at a time.
    with engine.begin() as conn:
        for dataset, (model, columns) in DATASETS.items():
            rel = getattr(cfg.history, dataset)
            if rel is None:
                continue
            started = time.perf_counter()
            if isinstance(rel, HistoryQuery):
                path = Path(rel.query)
                frame, malformed = _read_query(dataset, cfg, rel, columns, as_of), []
            else:
                path = cfg.resolve(Path(rel))
                frame, malformed = read_export(f"history_{dataset}", path, columns)
            origins[dataset] = str(path)
            clean, issues = CHECKS[dataset](frame, cfg, as_of)
            q = pd.concat(
                [issues.records(), malformed_rows(f"history_{dataset}", path, malformed)],
                ignore_index=True,
            )
            clean = clean.drop(index=issues.bad_index())
            read[dataset] = len(frame) + len(malformed)
            del frame
            quarantines.append(q)
            quarantined[dataset] = int(q["source_row"].nunique())
            loaded[dataset] = len(clean)
            seconds[f"validate_{dataset}"] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
            _replace_table(conn, dataset, clean)
            seconds[f"load_{dataset}"] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
            mirror.append(features.mirror_files(dataset, clean, model.__tablename__))
            del clean
            seconds[f"mirror_{dataset}"] = round(time.perf_counter() - started, 2)
            log.info(
                "history %s: %d rows read, %d quarantined",
                dataset,
                read[dataset],
                quarantined[dataset],
            )

        quarantine = (
            pd.concat(quarantines, ignore_index=True)
            if quarantines
            else quality._empty_quarantine()
        )
        q_key = lake.partition("quarantine", as_of) + "/history.parquet"
        lake.write_parquet(root / q_key, quarantine)
        lake.write_bytes(
            root / q_key.replace(".parquet", ".csv"),
            quality.neutralize(quarantine).to_csv(index=False).encode("utf-8"),
        )
        # A changed layout quarantines most rows; replacing good history with the remainder
        # would quietly blind the model.  Raising here rolls the tables back (the quarantine
        # above stays in the lake for the operator).
        share = cfg.gates.max_quarantine_share
        failures = [
            {
                "source": f"history_{name}",
                "file": origins[name],
                "gate": "QUARANTINE_SHARE",
                "message": f"{quarantined[name]} of {read[name]} rows quarantined, above the "
                f"configured share {share:.0%}; history tables left as they were",
            }
            for name in read
            if read[name] and quarantined[name] / read[name] > share
        ]
        if failures:
            raise quality.SourceGateError(failures)
    # Only once the new history is committed: the daily score reads it from here (see
    # ``dunning.features``), so it must never describe tables that were rolled back.
    started = time.perf_counter()
    mirror_key = features.write_mirror(root, as_of, mirror)
    seconds["mirror_write"] = round(time.perf_counter() - started, 2)
    return {
        "as_of": as_of.isoformat(),
        "read": read,
        "loaded": loaded,
        "quarantined": quarantined,
        "rows_quarantined": int(sum(quarantined.values())),
        "quarantine": q_key,
        "quarantine_by_reason": quarantine["reason"].value_counts().astype(int).to_dict(),
        "mirror": mirror_key,
        "seconds": seconds,
    }


# --- reading ---------------------------------------------------------------------------------


def _read_query(
    dataset: str, cfg: Config, spec: HistoryQuery, columns: tuple[str, ...], as_of: date
) -> pd.DataFrame:
    """A history dataset from a database, as text cells so the same checks apply."""
    frame = read_query(
        cfg.resolve_sqlite(spec.url), spec.query, as_of, f"history {dataset}", columns
    )
    frame = frame[[*columns, "source_file", "source_row"]]
    frame["source"] = f"history_{dataset}"
    return frame


def read_export(
    name: str, path: Path, columns: tuple[str, ...], optional: tuple[str, ...] = ()
) -> tuple[pd.DataFrame, list[dict]]:
    """All cells as text with file line numbers, via the daily extract's CSV reader; optional
    columns a file lacks come back empty."""
    if not path.exists():
        raise SourceError(f"{path}: {name}: file not found")
    src = FileSource(name=name, path=path, columns={c: c for c in columns})
    text = path.read_bytes().decode("utf-8", errors="replace")
    if not text.strip():
        raise SourceError(f"{path}: {name}: file is empty")
    frame, malformed = _read_csv_text(src, path, text, first_line=1)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SourceError(f"{path}: {name}: missing column(s) {missing}")
    for column in optional:
        if column not in frame.columns:
            frame[column] = ""
    frame = frame[[*columns, *optional]].copy()
    frame["source"] = src.name
    frame["source_file"] = path.name
    frame["source_row"] = frame.index.astype("int64")
    return frame.reset_index(drop=True), malformed


def malformed_rows(source: str, path: Path, malformed: list[dict]) -> pd.DataFrame:
    """Lines the CSV reader could not split, as quarantine rows (nothing is dropped)."""
    if not malformed:
        return quality._empty_quarantine()
    rows = pd.DataFrame(malformed)
    return pd.DataFrame(
        {
            "source": source,
            "source_file": path.name,
            "source_row": rows["row"].astype("int64"),
            "field": "",
            "reason": quality.MALFORMED_LINE,
            "message": rows["message"],
            "value": "",
            "raw": rows["raw"],
        }
    )


# --- checks ----------------------------------------------------------------------------------


def _required(issues: quality._Issues, frame: pd.DataFrame, cols: tuple[str, ...]) -> None:
    for col in cols:
        issues.add(frame[col].str.strip() == "", col, quality.MISSING_FIELD, f"{col} is required")
    for col in frame.columns:
        if col not in SOURCE_COLUMNS:
            issues.add(
                frame[col].str.contains("\ufffd", regex=False),
                col,
                quality.BAD_ENCODING,
                "bytes that are not valid UTF-8",
            )


def _formula(issues: quality._Issues, frame: pd.DataFrame, cols: tuple[str, ...]) -> None:
    for col in cols:
        starts = frame[col].str.lstrip(" ").str.match(FORMULA_PATTERN).fillna(False)
        issues.add(starts, col, quality.FORMULA_CELL, "text would run as a spreadsheet formula")


def _date(issues: quality._Issues, frame: pd.DataFrame, col: str, optional: bool = False):
    text = frame[col].str.strip()
    parsed = quality.parse_date(text, "%Y-%m-%d")
    issues.add(parsed.isna() & (text != ""), col, quality.BAD_DATE, "not a date YYYY-MM-DD")
    return parsed


def _money(
    issues: quality._Issues, frame: pd.DataFrame, col: str, exponent: pd.Series, limit: int
) -> pd.Series:
    neg, whole, frac = quality.parse_amount(frame[col], NumberFormat())
    value, too_precise = quality.to_minor(neg, whole, frac, exponent, round_frac=False)
    filled = frame[col].str.strip() != ""
    issues.add(value.isna() & filled, col, quality.BAD_AMOUNT, "not an amount")
    issues.add(too_precise, col, quality.BAD_AMOUNT, "more decimals than the currency has")
    huge = whole.str.len().gt(15) | value.abs().gt(limit * 10 ** exponent.fillna(2))
    issues.add(huge, col, quality.AMOUNT_TOO_LARGE, f"above the configured maximum of {limit:,}")
    return value.where(~huge).astype("Int64")


def _currency(issues: quality._Issues, frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    cur = frame["currency"].str.strip().str.upper()
    exponent = quality.currency_exponent(cur)
    issues.add(
        exponent.isna() & (cur != ""),
        "currency",
        quality.BAD_CURRENCY,
        "not an ISO 4217 code in use",
    )
    return cur, exponent


def _nullable_bool(issues: quality._Issues, frame: pd.DataFrame, col: str) -> pd.Series:
    """Empty means unknown (None), unlike the snapshot's flags where empty means false."""
    text = frame[col].str.strip()
    parsed = quality.parse_bool(text)
    issues.add(parsed.isna(), col, quality.BAD_VALUE, f"{col} must be true, false or empty")
    return parsed.astype("boolean").where(text != "")


def check_invoices(
    frame: pd.DataFrame, cfg: Config, as_of: date
) -> tuple[pd.DataFrame, quality._Issues]:
    """The daily invoice checks (dates, money, signs, duplicates...) plus the paid date."""
    typed, issues = quality.check_invoices(
        frame.assign(reference="", customer_name=""), None, cfg.gates, as_of
    )
    paid = _date(issues, frame, "paid_date")
    issues.add(
        paid < typed["issue_date"],
        "paid_date",
        quality.BAD_DATE,
        "paid before the invoice was issued",
    )
    issues.add(
        paid > pd.Timestamp(as_of), "paid_date", quality.BAD_DATE, "paid after the as-of date"
    )
    out = typed[["invoice_id", "debtor_id", "doc_type", "issue_date", "due_date", "currency"]]
    out = out.assign(
        amount_minor=typed["amount_minor"],
        open_minor=typed["open_minor"],
        paid_date=paid,
        disputed=typed["disputed"],
    )
    return out, issues


def check_payments(
    frame: pd.DataFrame, cfg: Config, as_of: date
) -> tuple[pd.DataFrame, quality._Issues]:
    issues = quality._Issues(frame)
    _required(issues, frame, ("payment_id", "paid_on", "currency", "amount"))
    _formula(issues, frame, ("payment_id", "debtor_id", "reference"))
    cur, exponent = _currency(issues, frame)
    out = frame[list(SOURCE_COLUMNS)].copy()
    out["payment_id"] = frame["payment_id"].str.strip()
    debtor = frame["debtor_id"].str.strip()
    out["debtor_id"] = debtor.where(debtor != "")  # unidentified money is still a payment
    out["paid_on"] = _date(issues, frame, "paid_on")
    out["currency"] = cur
    out["amount_minor"] = _money(issues, frame, "amount", exponent, int(cfg.gates.max_amount_major))
    method = frame["method"].str.strip()
    out["method"] = method.where(method != "")
    out["reference"] = frame["reference"].where(frame["reference"] != "")
    quality._duplicates(issues, out, "payment_id")
    return out, issues


def check_contacts(
    frame: pd.DataFrame, cfg: Config, as_of: date
) -> tuple[pd.DataFrame, quality._Issues]:
    issues = quality._Issues(frame)
    _required(issues, frame, ("contact_id", "debtor_id", "at", "channel"))
    _formula(issues, frame, ("contact_id", "debtor_id"))
    out = frame[list(SOURCE_COLUMNS)].copy()
    out["contact_id"] = frame["contact_id"].str.strip()
    out["debtor_id"] = frame["debtor_id"].str.strip()
    text = frame["at"].str.strip()
    at = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    issues.add(at.isna() & (text != ""), "at", quality.BAD_DATE, "not an ISO 8601 timestamp")
    out["at"] = at
    channel = frame["channel"].str.strip().str.lower()
    issues.add(
        ~quality.isin(channel, CHANNELS) & (channel != ""),
        "channel",
        quality.BAD_VALUE,
        f"channel must be one of {list(CHANNELS)}",
    )
    out["channel"] = channel
    for col in ("template", "outcome"):
        value = frame[col].str.strip()
        out[col] = value.where(value != "")
    for col in ("connected", "conversation"):
        out[col] = _nullable_bool(issues, frame, col)
    quality._duplicates(issues, out, "contact_id")
    return out, issues


def check_events(
    frame: pd.DataFrame, cfg: Config, as_of: date
) -> tuple[pd.DataFrame, quality._Issues]:
    issues = quality._Issues(frame)
    _required(issues, frame, ("debtor_id", "event", "effective_date"))
    _formula(issues, frame, ("debtor_id",))
    out = frame[list(SOURCE_COLUMNS)].copy()
    out["debtor_id"] = frame["debtor_id"].str.strip()
    event = frame["event"].str.strip().str.lower()
    issues.add(
        ~event.str.match(EVENT_PATTERN).fillna(False) & (event != ""),
        "event",
        quality.BAD_VALUE,
        "event must be a lower-case code like dispute_opened",
    )
    issues.add(
        event.str.match(EVENT_PATTERN).fillna(False) & ~quality.isin(event, KNOWN_EVENTS),
        "event",
        quality.BAD_VALUE,
        f"unknown compliance event; known: {sorted(KNOWN_EVENTS)}",
    )
    out["event"] = event
    channel = frame["channel"].str.strip().str.lower()
    issues.add(
        ~quality.isin(channel, (*CHANNELS, "")),
        "channel",
        quality.BAD_VALUE,
        f"channel must be empty or one of {list(CHANNELS)}",
    )
    issues.add(
        quality.isin(event, CHANNEL_EVENTS) & (channel.fillna("") == ""),
        "channel",
        quality.MISSING_FIELD,
        "an opt-out, opt-in or consent event needs the channel it is about",
    )
    out["channel"] = channel.where(channel != "")
    out["effective_date"] = _date(issues, frame, "effective_date")
    detail = frame["detail"].fillna("")
    issues.add(
        (event == "inconvenient_time") & ~detail.str.match(WINDOW_PATTERN).fillna(False),
        "detail",
        quality.BAD_VALUE,
        'inconvenient_time needs {"weekdays": [0-6, ...], "start": "HH:MM", "end": "HH:MM"}',
    )
    out["detail"] = frame["detail"].where(frame["detail"] != "")
    return out, issues


CHECKS: dict[str, Callable[[pd.DataFrame, Config, date], tuple[pd.DataFrame, quality._Issues]]] = {
    "invoices": check_invoices,
    "payments": check_payments,
    "contacts": check_contacts,
    "compliance_events": check_events,
}


# --- loading ---------------------------------------------------------------------------------


def _replace_table(conn: sa.Connection, dataset: str, frame: pd.DataFrame) -> None:
    """Empty and refill one table; its secondary indexes are rebuilt once after the insert,
    which is several times faster than maintaining them row by row (same names, same columns)."""
    table = DATASETS[dataset][0].__table__
    for index in table.indexes:
        conn.execute(sa.text(f'DROP INDEX IF EXISTS "{index.name}"'))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f'TRUNCATE TABLE "{table.name}" RESTART IDENTITY'))
    else:
        conn.execute(sa.delete(table))
    cols = [c.name for c in table.columns if c.name != "id"]
    rows = frame[cols]
    if "at" in cols:  # keep the time of day; the bulk path writes datetimes as dates
        text = rows["at"].dt.strftime("%Y-%m-%d %H:%M:%S")
        if conn.dialect.name == "postgresql":
            text = text + "+00:00"
        rows = rows.assign(at=text)
    for start in range(0, len(rows), LOAD_CHUNK):
        ledger.bulk_insert(conn, table, rows.iloc[start : start + LOAD_CHUNK])
    for index in table.indexes:
        index.create(conn)
