"""Extract: read each AR source as-is into canonical text columns, keeping where every row came from.

Extraction only finds the data: title blocks, header lines, subtotal rows and control totals are
structure of an export, not data.  It converts nothing; validation decides what a value means, so
a bad cell becomes a quarantined row with its file, line and field rather than a crash.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from pyarrow import csv as pacsv

from dunning import lake
from dunning.config import SQL_DIR, Config, FileSource, SqlSource
from dunning.errors import SourceError, SourceMissing
from dunning.schema import OPTIONAL, REQUIRED

HEADER_SEARCH_LINES = 50


@dataclass
class Extracted:
    """What a source gave us: canonical text columns plus facts about the delivery."""

    source: str
    dataset: str
    frame: pd.DataFrame
    file: str
    source_as_of: str | None = None
    # Totals the source vouches for, per currency: {"currency", "open_amount" (text), "rows", "line"}.
    control_totals: list[dict] = field(default_factory=list)
    structure_rows: int = 0  # title, blank, subtotal and total rows that carry no invoice
    malformed: list[dict] = field(default_factory=list)  # lines the CSV parser could not split
    delivered_on: str | None = None  # file date, when the source states no as-of of its own

    def meta(self) -> dict:
        return {
            "source": self.source,
            "dataset": self.dataset,
            "file": self.file,
            "rows": len(self.frame),
            "source_as_of": self.source_as_of,
            "control_totals": self.control_totals,
            "structure_rows": self.structure_rows,
            "malformed": self.malformed,
            "delivered_on": self.delivered_on,
        }


UrlResolver = Callable[[str], str]


def extract(
    cfg: Config, name: str, as_of: date, resolve_url: UrlResolver | None = None
) -> Extracted:
    """Read source ``name`` of ``cfg`` for business date ``as_of``."""
    src = cfg.source(name)
    if isinstance(src, FileSource):
        path = cfg.resolve(Path(str(src.path).format(as_of=as_of.isoformat())))
        return _extract_file(src, path)
    url = resolve_url(src.url) if resolve_url else src.url
    return _extract_sql(src, cfg.resolve_sqlite(url), as_of)


# --- files -------------------------------------------------------------------------------------


def _extract_file(src: FileSource, path: Path) -> Extracted:
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise SourceMissing(f"{path}: source {src.name!r}: file not found") from exc
    if size == 0:
        raise SourceError(f"{path}: source {src.name!r}: file is empty (0 bytes)")
    lines = _xlsx_rows(src, path) if src.format == "xlsx" else None
    result = Extracted(source=src.name, dataset=src.dataset, frame=pd.DataFrame(), file=str(path))
    if lines is None:
        text = path.read_bytes().decode(src.encoding, errors="replace")
        header_idx, title = _find_header_text(src, path, text)
        body_start = _line_offset(text, header_idx)
        frame, malformed = _read_csv_text(src, path, text[body_start:], first_line=header_idx + 1)
    else:
        header_idx, title = _find_header_rows(src, path, lines)
        frame = pd.DataFrame(lines[header_idx + 1 :], columns=lines[header_idx], dtype="str")
        frame.index = pd.RangeIndex(header_idx + 2, header_idx + 2 + len(frame))
        malformed = []
    result.malformed = malformed
    result.source_as_of = _title_as_of(src, path, title)
    if result.source_as_of is None:
        # No as-of in the data: the delivery date still catches yesterday's file on a fixed path.
        result.delivered_on = datetime.fromtimestamp(path.stat().st_mtime, UTC).date().isoformat()
    frame = _canonical(src, path, frame, header_line=header_idx + 1)
    frame, result.structure_rows, result.control_totals = _split_totals(src, frame)
    result.structure_rows += header_idx + 1
    frame["source"] = src.name
    frame["source_file"] = path.name
    frame["source_row"] = frame.index.astype("int64")
    result.frame = frame.reset_index(drop=True)
    return result


def _line_offset(text: str, line_idx: int) -> int:
    pos = 0
    for _ in range(line_idx):
        pos = text.index("\n", pos) + 1
    return pos


def _find_header_text(src: FileSource, path: Path, text: str) -> tuple[int, str]:
    if not src.header_starts_with:
        return 0, ""
    head = text[: 64 * 1024].splitlines()[:HEADER_SEARCH_LINES]
    for i, line in enumerate(head):
        if line.lstrip("\ufeff").startswith(src.header_starts_with):
            return i, "\n".join(head[:i])
    raise SourceError(
        f"{path}: source {src.name!r}: no header line starting with "
        f"{src.header_starts_with!r} in the first {HEADER_SEARCH_LINES} lines"
    )


def _find_header_rows(src: FileSource, path: Path, rows: list[list[str]]) -> tuple[int, str]:
    if not src.header_starts_with:
        return 0, ""
    for i, row in enumerate(rows[:HEADER_SEARCH_LINES]):
        if src.delimiter.join(row).startswith(src.header_starts_with):
            return i, "\n".join(" ".join(r).strip() for r in rows[:i])
    raise SourceError(
        f"{path}: source {src.name!r}: no header row starting with "
        f"{src.header_starts_with!r} in the first {HEADER_SEARCH_LINES} rows"
    )


def _read_csv_text(
    src: FileSource, path: Path, text: str, first_line: int
) -> tuple[pd.DataFrame, list[dict]]:
    """Parse with pyarrow's multithreaded reader; any line with the wrong number of fields
    (too many *or* too few) sends the file to the exact, line-numbered csv-module path, so a
    ragged line is quarantined instead of being padded, truncated or silently skipped."""
    header_line, _, _ = text.partition("\n")
    try:
        header = next(csv.reader([header_line.rstrip("\r")], delimiter=src.delimiter))
    except StopIteration as exc:
        raise SourceError(f"{path}: source {src.name!r}: no header line") from exc
    ragged: list[object] = []

    def on_invalid(row: object) -> str:
        ragged.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(text.encode("utf-8")),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
            parse_options=pacsv.ParseOptions(
                delimiter=src.delimiter,
                invalid_row_handler=on_invalid,
                ignore_empty_lines=False,
                newlines_in_values=True,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError):
        ragged.append("unparseable")
    if ragged or len(set(header)) != len(header):
        return _read_csv_slow(src, text, first_line)
    frame = table.to_pandas()
    if any(frame[c].str.contains("\n", regex=False).any() for c in frame.columns):
        return _read_csv_slow(src, text, first_line)  # line numbers shift after such a cell
    # Line numbers are 1-based file lines; the header is line ``first_line``.
    frame.index = pd.RangeIndex(first_line + 1, first_line + 1 + len(frame))
    return frame, []


def _read_csv_slow(src: FileSource, text: str, first_line: int) -> tuple[pd.DataFrame, list[dict]]:
    reader = csv.reader(io.StringIO(text), delimiter=src.delimiter)
    header = next(reader)
    rows, lines, malformed = [], [], []
    end = reader.line_num
    for row in reader:
        # A record starts on the line after the previous one ended (cells may hold newlines).
        line, end = first_line + end, reader.line_num
        if not any(row):
            rows.append([""] * len(header))
            lines.append(line)
        elif len(row) == len(header):
            rows.append(row)
            lines.append(line)
        else:
            malformed.append(
                {
                    "row": line,
                    "message": f"expected {len(header)} fields, saw {len(row)}",
                    "raw": src.delimiter.join(row),
                }
            )
    frame = pd.DataFrame(rows, columns=header, index=pd.Index(lines), dtype="str")
    return frame, malformed


def _xlsx_rows(src: FileSource, path: Path) -> list[list[str]]:
    """XLSX cells arrive typed; turn them back to text so one validation path serves every source."""
    try:
        raw = pd.read_excel(
            path, sheet_name=src.sheet, header=None, dtype=object, engine="openpyxl"
        )
    except Exception as exc:  # openpyxl raises many types for a corrupt workbook
        raise SourceError(
            f"{path}: source {src.name!r}: not a readable XLSX workbook: {exc}"
        ) from exc
    raw = raw.dropna(how="all", axis=1)

    def cell(v: object) -> str:
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return ""
        if isinstance(v, datetime):
            return v.date().isoformat()
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    return [[cell(v) for v in row] for row in raw.itertuples(index=False)]


def _title_as_of(src: FileSource, path: Path, title: str) -> str | None:
    if not src.as_of_pattern:
        return None
    match = re.search(src.as_of_pattern, title)
    if not match:
        raise SourceError(
            f"{path}: source {src.name!r}: title block has no as-of date matching "
            f"{src.as_of_pattern!r}"
        )
    raw = match.group("d")
    for fmt in (src.date_format, "%Y-%m-%d"):
        try:
            return datetime.strptime(raw, fmt).date().isoformat()
        except ValueError:
            continue
    raise SourceError(f"{path}: source {src.name!r}: title as-of date {raw!r} is not a date")


def _canonical(src: FileSource, path: Path, frame: pd.DataFrame, header_line: int) -> pd.DataFrame:
    """Rename mapped columns to canonical names; a missing required column stops this source."""
    header = [str(c).lstrip("\ufeff").strip() for c in frame.columns]
    frame.columns = header
    missing = [
        f"{col!r} (maps to {canon})"
        for col, canon in src.columns.items()
        if col not in header and canon in REQUIRED[src.dataset]
    ]
    unmapped_required = set(REQUIRED[src.dataset]) - set(src.columns.values())
    if unmapped_required:
        raise SourceError(
            f"{path}: source {src.name!r}: config maps no column to {sorted(unmapped_required)}"
        )
    if missing:
        raise SourceError(
            f"{path}: line {header_line}: source {src.name!r}: missing column " + ", ".join(missing)
        )
    present = {col: canon for col, canon in src.columns.items() if col in header}
    # Blank lines are structure, not data -- judged on the whole line, unmapped cells included.
    blank = (frame.fillna("") == "").all(axis=1)
    out = frame.loc[~blank, list(present)].rename(columns=present)
    for canon in OPTIONAL[src.dataset]:
        if canon not in out.columns:
            out[canon] = ""
    return out


def _split_totals(src: FileSource, frame: pd.DataFrame) -> tuple[pd.DataFrame, int, list[dict]]:
    if not src.total_row_column or src.total_row_column not in frame.columns:
        return frame, 0, []
    label = frame[src.total_row_column].str.strip()
    # A customer called "Total Gym Supplies" is data: total rows carry no invoice or debtor id,
    # and no document type or date either -- a data row that lost its ids still has those, and
    # goes on to the row rules (quarantined, never dropped as a total).
    keyless = pd.Series(True, index=frame.index)
    for col in ("invoice_id", "debtor_id", "doc_type", "issue_date", "due_date"):
        if col in frame.columns:
            keyless &= frame[col].fillna("").str.strip() == ""
    totals = label.str.contains(src.total_row_pattern, regex=True, na=False) & keyless
    controls: list[dict] = []
    if src.grand_total_pattern:
        grand = label.where(keyless).str.extract(src.grand_total_pattern)
        column = grand["cur"] if "cur" in grand else grand.iloc[:, 0]
        for line, cur in column.dropna().items():
            row = frame.loc[line]
            controls.append(
                {
                    "currency": str(cur) or row.get("currency", ""),
                    "open_amount": row["open_amount"],
                    "rows": None,
                    "line": int(line),
                }
            )
    return frame[~totals], int(totals.sum()), controls


# --- SQL ---------------------------------------------------------------------------------------


def read_sql_file(name: str) -> str:
    """Named SQL lives in include/sql so it is reviewed as SQL, never built from strings."""
    path = SQL_DIR / name
    if path.parent != SQL_DIR or not path.is_file():
        raise SourceError(f"{path}: SQL file not found in {SQL_DIR}")
    return path.read_text(encoding="utf-8")


def read_query(
    url: str, query: str, as_of: date, label: str, columns: tuple[str, ...]
) -> pd.DataFrame:
    """A named query's rows as text cells (bound with ``:as_of``), numbered from 1 as
    ``source_row`` so a quarantine names the result row; stops naming the query on failure."""
    where = f"{query}: {label}"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(
                sa.text(read_sql_file(query)),
                conn,
                params={"as_of": as_of.isoformat()},
                dtype="str",
            )
    except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        cause = exc.__cause__ or exc
        raise SourceError(f"{where}: query failed: {str(cause).splitlines()[0]}") from exc
    finally:
        engine.dispose()
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SourceError(f"{where}: query returns no column(s) {missing}")
    frame = frame.fillna("").astype("str")
    frame["source_file"] = query
    frame["source_row"] = np.arange(1, len(frame) + 1, dtype="int64")
    return frame


def _extract_sql(src: SqlSource, url: str, as_of: date) -> Extracted:
    label = f"{src.name}:{src.query}"
    params = {"as_of": as_of.isoformat()}
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(sa.text(read_sql_file(src.query)), conn, params=params, dtype="str")
            controls = []
            if src.control_query:
                ctl = pd.read_sql(sa.text(read_sql_file(src.control_query)), conn, params=params)
                controls = [
                    {
                        "currency": r.currency,
                        "open_amount": str(r.open_amount),
                        "rows": int(r.rows),
                        "line": None,
                    }
                    for r in ctl.itertuples(index=False)
                ]
            fresh = None
            if src.freshness_query:
                value = conn.execute(sa.text(read_sql_file(src.freshness_query)), params).scalar()
                fresh = str(value)[:10] if value is not None else None
    except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) and exc.__cause__ else exc
        raise SourceError(
            f"{label}: source {src.name!r}: query failed: {type(cause).__name__}: "
            f"{str(cause).splitlines()[0]}"
        ) from exc
    finally:
        engine.dispose()
    missing = set(REQUIRED[src.dataset]) - set(frame.columns)
    if missing:
        raise SourceError(
            f"{label}: source {src.name!r}: query returns no column {sorted(missing)}"
        )
    frame = frame.fillna("")
    for canon in OPTIONAL[src.dataset]:
        if canon not in frame.columns:
            frame[canon] = ""
    frame["source"] = src.name
    frame["source_file"] = src.query
    frame["source_row"] = pd.RangeIndex(1, len(frame) + 1)
    return Extracted(
        source=src.name,
        dataset=src.dataset,
        frame=frame,
        file=label,
        source_as_of=fresh,
        control_totals=controls,
    )


# --- stage ---------------------------------------------------------------------------------------


def extract_to_lake(
    cfg: Config, name: str, as_of: date, root: Any, resolve_url: UrlResolver | None = None
) -> dict:
    """Extract one source into the lake; returns the small record tasks pass to each other."""
    ex = extract(cfg, name, as_of, resolve_url)
    key = lake.partition("extract", as_of, source=name)
    lake.write_parquet(root / key / "rows.parquet", ex.frame)
    lake.write_json(root / key / "meta.json", ex.meta())
    return {"source": name, "dataset": ex.dataset, "key": key, "rows": len(ex.frame)}


def read_extracted(root: Any, key: str) -> Extracted:
    meta = lake.read_json(root / key / "meta.json")
    frame = lake.read_parquet(root / key / "rows.parquet")
    return Extracted(
        source=meta["source"],
        dataset=meta["dataset"],
        frame=frame,
        file=meta["file"],
        source_as_of=meta["source_as_of"],
        control_totals=meta["control_totals"],
        structure_rows=meta["structure_rows"],
        malformed=meta["malformed"],
        delivered_on=meta.get("delivered_on"),
    )
