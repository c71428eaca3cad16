"""Portfolio configuration: YAML validated at load, so a typo stops the run with the file and key.

The collections team edits this file; the data engineer points ``DUNNING_CONFIG`` at it.  Paths in
it are relative to the file itself, so a generated portfolio can be moved as a folder.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = REPO_ROOT / "include" / "sql"
DEFAULT_CONFIG = REPO_ROOT / "var" / "demo" / "config.yaml"
DEFAULT_LEDGER_URL = f"sqlite:///{REPO_ROOT / 'var' / 'ledger.sqlite'}"
DEFAULT_LAKE = (REPO_ROOT / "var" / "lake").as_uri()


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumberFormat(_Strict):
    """How a source writes amounts: ERP exports use thousands separators, symbols and (negatives)."""

    decimal: str = "."
    thousands: str = ""
    parentheses_negative: bool = False
    strip: str = ""  # characters removed before parsing, e.g. currency symbols "$£€"


class FileSource(_Strict):
    """An export dropped as a file (CSV or XLSX)."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    kind: Literal["file"] = "file"
    dataset: Literal["invoices", "debtors"] = "invoices"
    path: Path
    format: Literal["csv", "xlsx"] = "csv"
    encoding: str = "utf-8"
    delimiter: str = ","
    sheet: str | int = 0
    # Column in the file -> canonical column.  Columns not named are kept only in quarantine rows.
    columns: dict[str, str]
    date_format: str = "%Y-%m-%d"
    number: NumberFormat = NumberFormat()
    # ERP layout: a title block above the header, subtotal/total rows in the body.
    header_starts_with: str | None = None
    as_of_pattern: str | None = None  # regex with a group "d" matching the as-of date in the title
    total_row_column: str | None = None  # canonical column whose text marks subtotal/total rows
    total_row_pattern: str = r"^\s*(?:Sub)?[Tt]otal\b|^\s*Grand [Tt]otal\b"
    grand_total_pattern: str | None = None  # regex with groups "cur" (optional) on the total row


class SqlSource(_Strict):
    """An AR system reached through SQLAlchemy; the query is a named file in include/sql/."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    kind: Literal["sql"] = "sql"
    dataset: Literal["invoices", "debtors"] = "invoices"
    url: str  # SQLAlchemy URL, or "conn:<airflow connection id>" resolved by the Airflow adapter
    query: str  # file name under include/sql/, bound with :as_of
    control_query: str | None = None  # returns rows (currency, open_minor_total, rows)
    freshness_query: str | None = None  # returns one row: the source's own as-of date


def _source_kind(value: object) -> str:
    raw = value.get("kind", "file") if isinstance(value, dict) else getattr(value, "kind", "file")
    return raw if raw in ("file", "sql") else "file"


Source = Annotated[
    Annotated[FileSource, Tag("file")] | Annotated[SqlSource, Tag("sql")],
    Discriminator(_source_kind),
]


class Gates(_Strict):
    """Source-level gates: any failure stops the run before anybody is contacted."""

    max_staleness_days: int = Field(1, ge=0)
    max_row_change_share: float = Field(0.5, gt=0)
    max_balance_change_share: float = Field(0.5, gt=0)
    max_quarantine_share: float = Field(0.2, ge=0, le=1)
    max_amount_major: float = Field(10_000_000, gt=0)


class Schedule(_Strict):
    cron: str = "0 6 * * *"
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value


class Portfolio(_Strict):
    name: str
    collector: Literal["creditor", "third_party"] = "creditor"
    home_currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"


class Config(_Strict):
    portfolio: Portfolio
    schedule: Schedule = Schedule()
    sources: list[Source]
    gates: Gates = Gates()
    source_file: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _unique_sources(self) -> Config:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {dupes}")
        if not any(s.dataset == "invoices" for s in self.sources):
            raise ValueError("at least one source must have dataset: invoices")
        return self

    def source(self, name: str) -> FileSource | SqlSource:
        for src in self.sources:
            if src.name == name:
                return src
        raise KeyError(f"no source named {name!r} in {self.source_file}")

    def resolve_sqlite(self, url: str) -> str:
        """``sqlite:///relative.db`` is relative to the config file too (absolute URLs pass)."""
        prefix = "sqlite:///"
        if not url.startswith(prefix) or url.startswith(prefix + "/"):
            return url
        return prefix + str(self.resolve(Path(url.removeprefix(prefix))))

    def resolve(self, path: Path) -> Path:
        """Paths in the config are relative to the config file, so a portfolio folder can move."""
        base = self.source_file.parent if self.source_file else Path.cwd()
        return path if path.is_absolute() else base / path


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config named by ``path`` or ``DUNNING_CONFIG``."""
    file = Path(path or config_path())
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{file}: config file not found (set DUNNING_CONFIG)") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level")
    try:
        return Config.model_validate({**raw, "source_file": file.resolve()})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{file}: {problems}") from exc


def config_path() -> Path:
    return Path(os.environ.get("DUNNING_CONFIG") or DEFAULT_CONFIG)


def ledger_url() -> str:
    return os.environ.get("DUNNING_LEDGER_URL") or DEFAULT_LEDGER_URL


def lake_url() -> str:
    return os.environ.get("DUNNING_LAKE") or DEFAULT_LAKE


def parse_date(value: str | date) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)
