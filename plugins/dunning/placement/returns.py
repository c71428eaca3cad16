"""What agencies send back: acknowledgements, payments and closures (close-and-return).

Each agency drops CSV files (UTF-8, header row) in its ``returns`` folder; the name says the kind:

* ``ack*.csv`` -- ``record_type,placement_file,account_ref,balance_minor,rows``: one ``D`` row per
  account received, one ``T`` trailer row with ``rows`` and the ``balance_minor`` total.
* ``payments*.csv`` -- ``record_type,payment_ref,account_ref,paid_on,amount_minor,rows``: ``D``
  rows (a negative amount reverses a payment), ``T`` trailer with ``rows`` and the amount total.
* ``closures*.csv`` -- ``record_type,account_ref,closed_on,reason,rows``: ``D`` rows, ``T``
  trailer with ``rows``.  Reasons: ``CLOSURE_REASONS``.

A file whose trailer does not match its rows, or an acknowledgement whose totals are not what
we placed, is rejected whole with the file, row and field named (AIM: "if the trailer doesn't
match the detail, the agency shouldn't process the file" -- nor should we).  In an accepted
payments or closures file a bad row is quarantined and the rest loads.  A file is loaded once
(by content hash), so a re-delivered or re-read file changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from dunning import clock
from dunning.config import Agency, Config
from dunning.ledger import AgencyFile, AgencyPayment, PlacedAccount, insert_ignore

KINDS = {
    "ack": ("placement_file", "account_ref", "balance_minor", "rows"),
    "payments": ("payment_ref", "account_ref", "paid_on", "amount_minor", "rows"),
    "closures": ("account_ref", "closed_on", "reason", "rows"),
}
TOTAL_FIELD = {"ack": "balance_minor", "payments": "amount_minor", "closures": None}
# Close-and-return reasons; the paid ones close the placement, the others return the account.
CLOSURE_REASONS = {
    "PIF": "closed",  # paid in full to the agency
    "SIF": "closed",  # settled in full
    "BKP": "returned",  # bankruptcy
    "DEC": "returned",  # deceased
    "DSP": "returned",  # disputed, returned for validation
    "UNC": "returned",  # uncollectable / cannot locate
    "SOL": "returned",  # statute of limitations
    "RCL": "returned",  # our recall, confirmed
}


class AgencyFileRejected(ValueError):
    """A whole agency file refused: the message names the file, row and field."""


@dataclass
class Loaded:
    files: int = 0
    rejected: list[dict] = field(default_factory=list)
    acknowledged: int = 0
    payments: int = 0
    collected_minor: int = 0
    commission_minor: int = 0
    closed: int = 0
    quarantine: list[dict] = field(default_factory=list)


def _kind(path: Path) -> str | None:
    return next((k for k in KINDS if path.name.startswith(k)), None)


def _int(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column].str.strip(), errors="coerce")


def read_file(path: Path, kind: str) -> tuple[pd.DataFrame, pd.Series]:
    """The detail rows (with their line numbers in ``line``) and the trailer, after checking
    the columns and that the trailer's control totals match the detail."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise AgencyFileRejected(f"{path.name}: not a readable UTF-8 CSV file ({exc})") from exc
    missing = [c for c in ("record_type", *KINDS[kind]) if c not in frame.columns]
    if missing:
        raise AgencyFileRejected(f"{path.name}: missing columns {missing}")
    frame["line"] = np.arange(2, len(frame) + 2)
    kinds = frame["record_type"].str.strip()
    bad = frame[~kinds.isin(["D", "T"])]
    if len(bad):
        row = bad.iloc[0]
        raise AgencyFileRejected(
            f"{path.name} row {row['line']} record_type: {row['record_type']!r} is not D or T"
        )
    trailers = frame[kinds == "T"]
    if len(trailers) != 1 or trailers.index[0] != frame.index[-1]:
        raise AgencyFileRejected(f"{path.name}: needs exactly one T trailer row, last")
    detail, trailer = frame[kinds == "D"], trailers.iloc[0]
    _check(path, trailer, "rows", len(detail), "detail rows")
    total = TOTAL_FIELD[kind]
    if total:
        _check(path, trailer, total, int(_int(detail, total).fillna(0).sum()), "detail total")
    return detail, trailer


def _check(path: Path, trailer: pd.Series, column: str, expected: int, what: str) -> None:
    given = pd.to_numeric(str(trailer[column]).strip(), errors="coerce")
    if pd.isna(given) or int(given) != expected:
        raise AgencyFileRejected(
            f"{path.name} row {trailer['line']} (trailer) {column}: {trailer[column]!r} but "
            f"the {what} is {expected}"
        )


def load_returns(cfg: Config, engine: sa.Engine, as_of: date) -> Loaded:
    """Every agency's new return files, oldest name first; see the module docstring."""
    out = Loaded()
    for agency in cfg.placement.agencies:
        if agency.returns is None:
            continue
        inbox = cfg.resolve(agency.returns)
        for path in sorted(inbox.glob("*.csv")) if inbox.is_dir() else []:
            kind = _kind(path)
            if kind is None:
                continue
            _load_one(engine, agency, path, kind, as_of, out)
    return out


def _load_one(
    engine: sa.Engine, agency: Agency, path: Path, kind: str, as_of: date, out: Loaded
) -> None:
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    files = AgencyFile.__table__
    with engine.connect() as conn:
        seen = conn.execute(sa.select(files.c.status).where(files.c.sha256 == sha)).scalar()
    if seen is not None:
        return
    rows, total, error = 0, 0, None
    try:
        detail, _ = read_file(path, kind)
        rows = len(detail)
        with engine.begin() as conn:
            if kind == "ack":
                total = _acknowledge(conn, agency, path, detail, as_of, out)
            elif kind == "payments":
                total = _payments(conn, agency, path, detail, sha, as_of, out)
            else:
                _closures(conn, agency, path, detail, out)
            _log(conn, sha, agency, as_of, kind, path, rows, total, "loaded", None)
        out.files += 1
    except AgencyFileRejected as exc:
        error = str(exc)
        with engine.begin() as conn:
            _log(conn, sha, agency, as_of, kind, path, rows, total, "rejected", error)
        out.rejected.append({"agency": agency.name, "file": str(path), "error": error})


def _log(
    conn: sa.Connection,
    sha: str,
    agency: Agency,
    as_of: date,
    kind: str,
    path: Path,
    rows: int,
    total: int,
    status: str,
    error: str | None,
) -> None:
    conn.execute(
        insert_ignore(conn, AgencyFile.__table__, ["sha256"]),
        [
            {
                "sha256": sha,
                "agency": agency.name,
                "as_of": as_of,
                "direction": "in",
                "kind": kind,
                "name": str(path),
                "rows": rows,
                "total_minor": total,
                "status": status,
                "error": error,
                "recorded_at": clock.utcnow(),
            }
        ],
    )


def _placements(conn: sa.Connection, agency: str) -> pd.DataFrame:
    t = PlacedAccount.__table__.c
    return pd.read_sql(
        sa.select(t.account_ref, t.status, t.balance_minor, t.file_key).where(t.agency == agency),
        conn,
    ).set_index("account_ref")


def _acknowledge(
    conn: sa.Connection,
    agency: Agency,
    path: Path,
    detail: pd.DataFrame,
    as_of: date,
    out: Loaded,
) -> int:
    """All or nothing: every acknowledged file must be one we published to this agency, with
    the same count and total, and every account the balance we placed."""
    files = AgencyFile.__table__.c
    ours = pd.read_sql(
        sa.select(files.name, files.rows, files.total_minor).where(
            files.agency == agency.name, files.direction == "out", files.kind == "placements"
        ),
        conn,
    ).set_index("name")
    detail = detail.assign(
        placement_file=detail["placement_file"].str.strip().str.removesuffix(".pgp"),
        balance=_int(detail, "balance_minor"),
    )
    placed = _placements(conn, agency.name)
    for name, rows in detail.groupby("placement_file"):
        first = rows.iloc[0]
        if name not in ours.index:
            raise AgencyFileRejected(
                f"{path.name} row {first['line']} placement_file: {name!r} is not a file we "
                f"placed with {agency.name}"
            )
        want = ours.loc[name]
        if len(rows) != want["rows"] or rows["balance"].sum() != want["total_minor"]:
            raise AgencyFileRejected(
                f"{path.name} row {first['line']} balance_minor: acknowledges {len(rows)} "
                f"accounts for {int(rows['balance'].sum())} but {name} had {want['rows']} "
                f"for {want['total_minor']}"
            )
        known = placed.reindex(rows["account_ref"].str.strip())
        wrong = (known["file_key"].to_numpy() != name) | (
            known["balance_minor"].to_numpy() != rows["balance"].to_numpy()
        )
        if wrong.any():
            row = rows[wrong].iloc[0]
            raise AgencyFileRejected(
                f"{path.name} row {row['line']} account_ref: {row['account_ref']!r} with "
                f"balance {row['balance_minor']} is not an account of {name}"
            )
    t = PlacedAccount.__table__
    refs = detail["account_ref"].str.strip().tolist()
    conn.execute(t.update().where(t.c.account_ref.in_(refs)).values(acknowledged_on=as_of))
    out.acknowledged += len(refs)
    return int(detail["balance"].sum())


def _quarantine(
    out: Loaded, agency: Agency, path: Path, rows: pd.DataFrame, field: str, why: str
) -> None:
    out.quarantine += [
        {
            "source": f"agency:{agency.name}",
            "source_file": str(path),
            "source_row": int(line),
            "field": field,
            "reason": why,
            "value": str(value),
        }
        for line, value in zip(rows["line"], rows[field], strict=True)
    ]


def _payments(
    conn: sa.Connection,
    agency: Agency,
    path: Path,
    detail: pd.DataFrame,
    sha: str,
    as_of: date,
    out: Loaded,
) -> int:
    """Agency collections on our accounts: commission at the agency's rate (half up, in minor
    units), the remittance net of it; an account the agency paid off is closed."""
    placed = _placements(conn, agency.name)
    amount = _int(detail, "amount_minor")
    paid_on = pd.to_datetime(detail["paid_on"].str.strip(), format="%Y-%m-%d", errors="coerce")
    ref = detail["account_ref"].str.strip()
    checks = [
        ("account_ref", "UNKNOWN_ACCOUNT", ~ref.isin(placed.index)),
        ("amount_minor", "BAD_AMOUNT", amount.isna() | (amount == 0) | (amount % 1 != 0)),
        ("paid_on", "BAD_DATE", paid_on.isna()),
        ("payment_ref", "MISSING", detail["payment_ref"].str.strip() == ""),
    ]
    bad = pd.Series(False, index=detail.index)
    for column, why, mask in checks:
        _quarantine(out, agency, path, detail[mask & ~bad], column, why)
        bad |= mask
    ok = detail[~bad]
    cents = amount[~bad].astype("int64")
    rate_bp = round(agency.commission_rate * 10_000)
    commission = np.sign(cents) * ((cents.abs() * rate_bp + 5_000) // 10_000)
    rows = pd.DataFrame(
        {
            "agency": agency.name,
            "payment_ref": ok["payment_ref"].str.strip(),
            "account_ref": ref[~bad],
            "debtor_id": ref[~bad].map(_debtors(conn, ref[~bad])),
            "paid_on": paid_on[~bad].dt.date,
            "amount_minor": cents,
            "commission_minor": commission,
            "remitted_minor": cents - commission,
            "file_sha256": sha,
        }
    )
    if len(rows):
        conn.execute(
            insert_ignore(conn, AgencyPayment.__table__, ["agency", "payment_ref"]),
            rows.to_dict("records"),
        )
    _refresh_collected(conn, rows["account_ref"].unique().tolist(), as_of)
    out.payments += len(rows)
    out.collected_minor += int(cents.sum())
    out.commission_minor += int(commission.sum())
    return int(cents.sum())


def _debtors(conn: sa.Connection, refs: pd.Series) -> pd.Series:
    t = PlacedAccount.__table__.c
    query = sa.select(t.account_ref, t.debtor_id).where(t.account_ref.in_(refs.unique().tolist()))
    return pd.read_sql(query, conn).set_index("account_ref")["debtor_id"]


def _refresh_collected(conn: sa.Connection, refs: list[str], as_of: date) -> None:
    """Collected and commission per account from all its payments (one UPDATE in SQL); an
    account paid off closes."""
    if not refs:
        return
    p, t = AgencyPayment.__table__.c, PlacedAccount.__table__

    def total(column: sa.Column) -> sa.ScalarSelect:
        return (
            sa.select(sa.func.coalesce(sa.func.sum(column), 0))
            .where(p.account_ref == t.c.account_ref)
            .scalar_subquery()
        )

    chosen = t.c.account_ref.in_(refs)
    conn.execute(
        t.update()
        .where(chosen)
        .values(collected_minor=total(p.amount_minor), commission_minor=total(p.commission_minor))
    )
    conn.execute(
        t.update()
        .where(chosen, t.c.status == "active", t.c.collected_minor >= t.c.balance_minor)
        .values(status="closed", ended_on=as_of, end_reason="PAID_AGENCY")
    )


def _closures(
    conn: sa.Connection, agency: Agency, path: Path, detail: pd.DataFrame, out: Loaded
) -> None:
    placed = _placements(conn, agency.name)
    ref = detail["account_ref"].str.strip()
    reason = detail["reason"].str.strip().str.upper()
    closed_on = pd.to_datetime(detail["closed_on"].str.strip(), format="%Y-%m-%d", errors="coerce")
    checks = [
        ("account_ref", "UNKNOWN_ACCOUNT", ~ref.isin(placed.index)),
        ("reason", "UNKNOWN_REASON", ~reason.isin(list(CLOSURE_REASONS))),
        ("closed_on", "BAD_DATE", closed_on.isna()),
    ]
    bad = pd.Series(False, index=detail.index)
    for column, why, mask in checks:
        _quarantine(out, agency, path, detail[mask & ~bad], column, why)
        bad |= mask
    t = PlacedAccount.__table__
    for (code, day), refs in ref[~bad].groupby([reason[~bad], closed_on[~bad].dt.date]):
        where = t.c.account_ref.in_(refs.tolist())
        conn.execute(
            t.update()
            .where(where, t.c.status == "active")
            .values(status=CLOSURE_REASONS[code], ended_on=day, end_reason=code)
        )
        # a recalled account the agency now returns keeps our recall's date and reason
        conn.execute(t.update().where(where, t.c.status == "recalled").values(status="returned"))
    out.closed += int((~bad).sum())
