"""Portfolio configuration: YAML validated at load, so a typo stops the run with the file and key.

The collections team edits this file; the data engineer points ``DUNNING_CONFIG`` at it.  Paths in
it are relative to the file itself, so a generated portfolio can be moved as a folder.
"""

from __future__ import annotations

import itertools
import os
from datetime import date
from pathlib import Path
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from dunning.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = REPO_ROOT / "include" / "sql"
DEFAULT_CONFIG = REPO_ROOT / "var" / "demo" / "config.yaml"
DEFAULT_LEDGER_URL = f"sqlite:///{REPO_ROOT / 'var' / 'ledger.sqlite'}"
DEFAULT_LAKE = (REPO_ROOT / "var" / "lake").as_uri()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumberFormat(_Strict):
    """How a source writes amounts: ERP exports use thousands separators, symbols and (negatives)."""

    decimal: str = "."
    thousands: str = ""
    parentheses_negative: bool = False
    strip: str = ""  # characters removed before parsing, e.g. currency symbols "$£€"


class SourceExpectations(_Strict):
    """What a source's delivery should look like, for the day-over-day gates: a floor that holds
    whatever yesterday was, and the size a first day (no earlier snapshot) is compared with."""

    min_rows: int = Field(1, ge=1)  # fewer rows than this stops the run (ROW_FLOOR)
    expected_rows: int | None = Field(None, ge=1)  # the first day's baseline for ROW_CHANGE


class _SourceBase(_Strict):
    """What every source has: its name and dataset, how a delivery is proven whole, and what a
    delivery should look like.

    ``completeness``: "control_totals" (the source's control totals -- an ERP export's grand
    totals, a SQL ``control_query``; a delivery without them stops the run) or "none" (said as
    a warning in every summary).  Default: control totals when the source gives them."""

    TOTALS_FIELD: ClassVar[str]  # the setting that gives the source's control totals

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    dataset: Literal["invoices", "debtors"] = "invoices"
    completeness: Literal["control_totals", "none"] | None = None
    expect: SourceExpectations = SourceExpectations()

    @model_validator(mode="before")
    @classmethod
    def _completeness_default(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("completeness") is None:
            proof = "control_totals" if data.get(cls.TOTALS_FIELD) else "none"
            data = {**data, "completeness": proof}
        return data

    @model_validator(mode="after")
    def _completeness(self) -> _SourceBase:
        if self.completeness == "control_totals" and not getattr(self, self.TOTALS_FIELD):
            raise ValueError(f"completeness: control_totals needs {self.TOTALS_FIELD}")
        return self


class FileSource(_SourceBase):
    """An export dropped as a file (CSV or XLSX)."""

    TOTALS_FIELD: ClassVar[str] = "grand_total_pattern"

    kind: Literal["file"] = "file"
    path: Path
    format: Literal["csv", "xlsx"] = "csv"
    encoding: str = "utf-8"
    delimiter: str = ","
    sheet: str | int = 0
    # Column in the file -> canonical column.  Columns not named here are not read.
    columns: dict[str, str]
    date_format: str = "%Y-%m-%d"
    number: NumberFormat = NumberFormat()
    # ERP layout: a title block above the header, subtotal/total rows in the body.
    header_starts_with: str | None = None
    as_of_pattern: str | None = None  # regex with a group "d" matching the as-of date in the title
    total_row_column: str | None = None  # canonical column whose text marks subtotal/total rows
    total_row_pattern: str = r"^\s*(?:Sub)?[Tt]otal\b|^\s*Grand [Tt]otal\b"
    grand_total_pattern: str | None = None  # regex with groups "cur" (optional) on the total row


class SqlSource(_SourceBase):
    """An AR system reached through SQLAlchemy; the query is a named file in include/sql/."""

    TOTALS_FIELD: ClassVar[str] = "control_query"

    kind: Literal["sql"] = "sql"
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
    # How long a daily run holds its business date at most, should it die before its summary:
    # a run for another date is refused while the lease holds (see ``ledger.take_lease``).
    run_lease_hours: float = Field(12, gt=0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value


Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
Channel = Literal["email", "sms", "letter", "call"]
Op = Literal["gt", "ge", "lt", "le", "eq", "ne", "in", "not_in"]


class Aging(_Strict):
    """Upper bounds (days past due) of the aging buckets; past the last one is ``N+``."""

    buckets: list[int] = [0, 30, 60, 90, 120]

    @field_validator("buckets")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if not value or value[0] != 0 or any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("must start at 0 and increase, e.g. [0, 30, 60, 90, 120]")
        return value

    def labels(self) -> list[str]:
        """current, 1-30, 31-60, ..., 120+ for the default bounds."""
        inner = [f"{a + 1}-{b}" for a, b in zip(self.buckets, self.buckets[1:], strict=False)]
        return ["current", *inner, f"{self.buckets[-1]}+"]


class HistoryQuery(_Strict):
    """A history dataset read from a database instead of a file (e.g. the compliance events a
    case-management system keeps): a named query in include/sql/, bound with :as_of."""

    url: str  # SQLAlchemy URL (a relative sqlite:/// path is relative to the config file)
    query: str


class History(_Strict):
    """Clean exports of the AR system's past: the ledger history features and the model learn
    from.  Each is a CSV file (path) or a query."""

    invoices: Path | HistoryQuery | None = None
    payments: Path | HistoryQuery | None = None
    contacts: Path | HistoryQuery | None = None
    compliance_events: Path | HistoryQuery | None = None


class Risk(_Strict):
    horizon_days: int = Field(30, gt=0)
    min_auc: float = Field(0.6, ge=0.5, le=1)  # a model below this is not approved for scoring
    test_months: int = Field(3, gt=0)


class Step(_Strict):
    """One cadence step: when (days from the oldest open due date), how and in which words."""

    name: Name
    offset_days: int
    channels: list[Channel] = Field(min_length=1)
    template: Name
    tone: Literal["friendly", "neutral", "firm", "final"] = "neutral"


# The broken-promise template replaces a step's own on these channels (letters and calls keep
# theirs: a printed notice and a call script are reviewed documents of their own).
BROKEN_PROMISE_CHANNELS = ("email", "sms")


class Strategy(_Strict):
    steps: list[Step] = Field(min_length=1)
    min_gap_days: int = Field(3, ge=0)
    business_days: bool = True  # move a contact off weekends and the debtor's public holidays
    stop_when: list[
        Literal["paid", "promise_to_pay", "payment_plan_current", "dispute", "placed"]
    ] = ["paid", "promise_to_pay", "payment_plan_current", "dispute", "placed"]
    # A broken promise or missed instalment resumes the cadence at the next step at once, in
    # these words (None: the next step's own template, on its own day).
    on_broken_promise: Name | None = "promise_broken"

    @model_validator(mode="after")
    def _ordered_steps(self) -> Strategy:
        offsets = [s.offset_days for s in self.steps]
        if offsets != sorted(set(offsets)):
            raise ValueError(f"step offsets must strictly increase, got {offsets}")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique, got {names}")
        return self


class Segment(_Strict):
    """A debtor is in the first segment (by priority, else list order) whose conditions all hold."""

    name: Name
    when: dict[str, dict[Op, float | int | str | bool | list[float | int | str]]] = {}
    strategy: Name | None  # None: no contact (e.g. disputed, in hardship review)
    priority: int | None = None
    description: str = ""

    @field_validator("when")
    @classmethod
    def _known_features(cls, value: dict) -> dict:
        from dunning.schema import SEGMENT_FEATURES

        unknown = sorted(set(value) - set(SEGMENT_FEATURES))
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; known: {list(SEGMENT_FEATURES)}")
        return value


class Arm(_Strict):
    """An experiment variant: other templates and/or other offsets for some steps."""

    name: Name
    weight: float = Field(1.0, gt=0)
    templates: dict[str, Name] = {}  # step name -> template
    offsets: dict[str, int] = {}  # step name -> offset_days


class Experiment(_Strict):
    name: Name
    segments: list[str] = []  # empty: every segment that has a strategy
    holdout_share: float = Field(0.1, ge=0, lt=1)
    arms: list[Arm] = Field(min_length=1)


DEFAULT_STRATEGIES = {
    "standard": Strategy(
        steps=[
            Step(
                name="nudge",
                offset_days=-3,
                channels=["email"],
                template="reminder_nudge",
                tone="friendly",
            ),
            Step(name="overdue", offset_days=3, channels=["email"], template="reminder_overdue"),
            Step(
                name="firm",
                offset_days=14,
                channels=["email", "sms"],
                template="reminder_firm",
                tone="firm",
            ),
            Step(
                name="final",
                offset_days=30,
                channels=["letter"],
                template="final_notice",
                tone="final",
            ),
        ]
    )
}


def _clock(value: str) -> str:
    from datetime import time

    try:
        time.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"expected a local time HH:MM, got {value!r}") from exc
    return value


Clock = Annotated[str, AfterValidator(_clock)]


class Policy(_Strict):
    """The compliance numbers (rule IDs from the domain catalogue).  LAW: the number is the
    law's; PRESUMPTION: the law presumes a violation above it; POLICY-DEFAULT: the law gives no
    number and this is our conservative choice, to be confirmed by the compliance officer."""

    hours_start: Clock = "08:00"  # LAW REGF-06: no contact before 8 a.m. local
    hours_end: Clock = (
        "21:00"  # LAW REGF-06: nor after 9 p.m.; 21:00 itself is outside (POLICY-DEFAULT)
    )
    calls_per_7_days: int = Field(7, ge=1)  # PRESUMPTION REGF-02 (7 in 7)
    conversation_cooldown_days: int = Field(7, ge=1)  # PRESUMPTION REGF-03 (day 1 = conversation)
    ma_calls_texts_per_7_days: int = Field(2, ge=1)  # LAW MA-01 (940 CMR 7.04(1)(f))
    nyc_attempts_per_7_days: int = Field(3, ge=1)  # LAW NYC-01 (all channels, from 2026-09-01)
    # WA-01 (RCW 19.16.250, read from a secondary source): off unless the portfolio turns it on.
    wa_communications_per_7_days: int | None = Field(None, ge=1)
    uk_no_sunday: bool = False  # POLICY-DEFAULT UK-01: no Sunday outbound to UK debtors when on
    # POLICY-DEFAULT REGF-01/CA-01: a creditor collecting its own debts follows Reg F anyway.
    creditor_follows_reg_f: bool = True
    # POLICY-DEFAULT UK-06: CONC does not split a dispute, so in these countries a disputed
    # invoice pauses contact with the whole debtor (elsewhere the invoice is left out).
    whole_debtor_dispute_countries: list[str] = ["GB"]
    send_time: Clock = "09:00"  # POLICY: when the day's wave goes out, in the schedule's zone
    collects_in_california: bool = False  # CA-02: the licence number goes on written messages
    california_licence: str | None = None

    @model_validator(mode="after")
    def _licence(self) -> Policy:
        if self.collects_in_california and not self.california_licence:
            raise ValueError(
                "california_licence: required when collects_in_california is true (CA-02)"
            )
        return self


class Portfolio(_Strict):
    name: str
    collector: Literal["creditor", "third_party"] = "creditor"
    home_currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    contact_email: str = "billing@example.com"  # shown in every message and on the payment page
    # The debt-collector disclosure a third-party collector's messages carry (Reg F 1006.18(e)),
    # per locale; the English one stands in for a locale without its own.
    disclosure: dict[str, str] = {
        "en": "This is a communication from a debt collector. This is an attempt to collect a "
        "debt and any information obtained will be used for that purpose.",
        "fr": "Ce message provient d'un agent de recouvrement. Il s'agit d'une tentative de "
        "recouvrement d'une créance ; toute information obtenue sera utilisée à cette fin.",
        "ar": "هذه رسالة من جهة تحصيل ديون. الغرض منها تحصيل دين، وستُستخدم أي معلومات نحصل "
        "عليها لهذا الغرض.",
    }


class EmailChannel(_Strict):
    """How reminder emails leave: the Airflow SMTP connection, the sender and the opt-out."""

    connection: str = "smtp_default"
    sender: str = "Billing <billing@example.com>"
    reply_to: str | None = None
    bounce_address: str | None = None  # envelope sender (Return-Path): where DSNs come back
    # One-click unsubscribe (RFC 8058): {contact} and {token} are filled per message.
    unsubscribe_url: str = "https://pay.example.com/unsubscribe?c={contact}&t={token}"
    unsubscribe_mailto: str | None = "unsubscribe@example.com"
    rate_per_second: float | None = Field(None, gt=0)
    messages_per_connection: int = Field(200, ge=1)  # reconnect after this many (server limits)


class SmsChannel(_Strict):
    connection: str = "sms_default"
    rate_per_second: float | None = Field(None, gt=0)
    max_segments: int = Field(3, ge=1)  # a longer rendering fails the message, it is not cut
    max_segments_by_template: dict[str, int] = {}


class FileChannel(_Strict):
    """Letters and the call queue are files for a vendor or the dialer: where they are dropped."""

    outbox: str | None = None  # ObjectStoragePath URL; default: the lake's outbox/<channel>/


class Channels(_Strict):
    email: EmailChannel = EmailChannel()
    sms: SmsChannel = SmsChannel()
    letter: FileChannel = FileChannel()
    call: FileChannel = FileChannel()
    # Debtor shards the day's wave is rendered in: one mapped task each, so with several
    # workers (CeleryExecutor) the templates, letters and payment pages render side by side.
    render_shards: int = Field(1, ge=1, le=64)
    # The circuit breaker: this many permanent refusals in a row is the provider refusing (a
    # relay answering 554 to everyone), not that many bad addresses.  The channel stops, those
    # messages stay unsent for a later wave, and the send task fails so the alert goes out.
    outage_after_refusals: int = Field(20, ge=2)


class Portal(_Strict):
    """The debtor's personal payment page, linked from every message."""

    # Where pages are published (ObjectStoragePath URL); default: the lake's portal/ folder.
    root: str | None = None
    # The public URL of ``root``; without one, S3 pages are linked by presigned URL.
    base_url: str | None = None
    link_days: int = Field(7, ge=1, le=7)  # presigned URLs (SigV4) live at most seven days
    checkout_url: str = "https://pay.example.com/checkout?ref={reference}"
    dispute_url: str = "https://pay.example.com/dispute?ref={reference}"
    plan_months: list[int] = [3, 6]


class Feedback(_Strict):
    """Where channel feedback is read from each run (missing files are simply nothing new)."""

    bounce_mailbox: Path | None = None  # folder of .eml DSNs
    sms_events: list[Path] = []  # provider event files (JSON Lines)
    email_events: list[Path] = []  # unsubscribe/complaint feeds (JSON Lines)


class PaymentFeed(_Strict):
    """One place money is reported: files matched by a glob (relative to this config) in one
    format, or a named query.  Every file is read each run; lines already reconciled are known
    by their content and skipped, so a late or re-delivered file is never counted twice."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    format: Literal["processor_csv", "camt053", "bai2", "mt940", "sql"]
    path: str | None = None  # a glob, e.g. feeds/bank/*.xml
    url: str | None = None  # format sql: SQLAlchemy URL
    query: str | None = None  # format sql: a file in include/sql/ (or next to the config)
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None  # when the feed has none

    @model_validator(mode="after")
    def _where(self) -> PaymentFeed:
        if self.format == "sql" and not (self.url and self.query):
            raise ValueError("format sql needs url and query")
        if self.format != "sql" and not self.path:
            raise ValueError(f"format {self.format} needs path (a file glob)")
        return self


class Retries(_Strict):
    """Failed card payments: when to try again.  Networks cap re-attempts (Visa: none after a
    category 1 decline, at most 15 in 30 days otherwise); these defaults stay inside them."""

    spacing_days: list[Annotated[int, Field(ge=1)]] = [3, 5, 7, 10]  # after each failure
    limits: dict[str, tuple[int, int]] = {  # network -> (max re-attempts, in so many days)
        "visa": (15, 30),
        "mastercard": (10, 30),
        "amex": (10, 30),
        "discover": (10, 30),
        "other": (4, 30),
    }


class Payments(_Strict):
    """Reconciliation: payment feeds, how sure a match must be to apply, exchange rates,
    promises to pay and payment plans."""

    feeds: list[PaymentFeed] = []
    # The AR system's open amounts leave out cash booked in the last N days before the run's
    # date; reconciled payments of those days lower what we chase (a day later AR has them).
    ar_cash_lag_days: int = Field(1, ge=0, le=30)
    auto_apply_confidence: float = Field(0.8, gt=0, le=1)  # below: exceptions queue
    rates: Path | None = None  # CSV date,currency,to,rate (1 currency = rate to)
    fx_tolerance: float = Field(0.01, ge=0, lt=0.2)  # converted amount "equal" within this share
    date_window_days: int = Field(30, ge=0)  # amount+date proximity: due date this close
    promises: Path | HistoryQuery | None = None  # promises to pay and payment plans
    promise_grace_days: int = Field(2, ge=0)  # a payment this late still keeps the promise
    retries: Retries = Retries()


# What a placement record can carry (dunning.placement.records builds them all); an agency's
# layout picks some, and only those leave the company (data minimization).
PLACEMENT_FIELDS: tuple[str, ...] = (
    # keys
    "account_ref", "customer_ref", "portfolio", "agency", "placement_date", "segment",
    # identity and contacts, with what the agency may do with them
    "name", "kind", "city", "region", "postal_code", "country", "timezones", "locale",
    "email", "email_consent", "email_opt_out", "employer_email",
    "phone", "sms_consent", "sms_opt_out", "call_opt_out",
    # money, in minor units
    "currency", "balance_minor", "principal_minor", "interest_minor", "fees_minor",
    "original_minor", "disputed_minor", "invoice_count", "invoice_refs",
    # dates
    "due_date", "first_delinquency_date", "last_payment_date", "last_payment_minor",
    "charge_off_date", "days_past_due",
    # Regulation F itemization (12 CFR 1006.34)
    "itemization_date", "itemization_type", "itemization_minor", "interest_since_minor",
    "fees_since_minor", "payments_since_minor", "original_creditor", "current_creditor",
    # status flags that must travel (CONC 7.13.5G, Reg F)
    "dispute", "cease_communication", "attorney_represented", "inconvenient_times",
    "payment_plan", "promise_broken", "vulnerable",
)  # fmt: skip
# The legal ones cannot be switched off (an agency may not work these accounts at all);
# the rest are the portfolio's choice.
MANDATORY_EXCLUSIONS = ("dispute", "bankruptcy", "deceased", "breathing_space")
EXCLUSIONS = (
    "dispute",
    "promise",
    "payment_plan",
    "bankruptcy",
    "deceased",
    "breathing_space",
    "statute_barred",
    "cooling_off",
)
PlacementField = Literal[PLACEMENT_FIELDS]  # type: ignore[valid-type]


class LayoutField(_Strict):
    """One column of an agency layout: which record field, under what header, how wide."""

    field: PlacementField
    header: str | None = None  # default: the field name
    width: int | None = Field(None, ge=1)  # fixed-width layouts: every field has one


class Layout(_Strict):
    format: Literal["csv", "pipe", "fixed"] = "csv"
    fields: list[LayoutField] = Field(min_length=1)
    date_format: str = "%Y-%m-%d"  # e.g. "%Y%m%d" for legacy platforms
    header: bool = True  # fixed-width files have none
    trailer: bool = False  # a last control row: record count and money total (AIM CTRL style)

    @field_validator("fields", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        """A plain field name is the common case: ``fields: [account_ref, balance_minor]``."""
        if isinstance(value, list):
            return [{"field": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _widths(self) -> Layout:
        names = [f.field for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"fields: listed twice: {dupes}")
        if self.format == "fixed":
            missing = [f.field for f in self.fields if f.width is None]
            if missing:
                raise ValueError(f"fields: a fixed-width layout needs a width for {missing}")
        return self


class Agency(_Strict):
    """A collection agency: what it takes (segments, countries, regions), its share in a champion /
    challenger split, its file layout, its key and its commission."""

    name: Name
    layout: Layout
    weight: float = Field(1.0, gt=0)  # share among the agencies an account could go to
    segments: list[str] = []  # empty: every segment
    countries: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = []  # empty: every country
    regions: list[str] = []  # states / counties (the debtor's region); empty: every region
    commission_rate: float = Field(0.25, ge=0, lt=1)
    pgp_public_key: Path | None = None  # ASCII-armoured; files are encrypted to it when given
    returns: Path | None = None  # folder where the agency's files arrive (ack, payments, closures)
    notify_email: str | None = None  # told when a placement file is published


class Cutoff(_Strict):
    days_past_due: int = Field(90, ge=1)
    by_segment: dict[str, Annotated[int, Field(ge=1)]] = {}  # segment -> days past due
    min_balance_minor: int = Field(0, ge=0)
    exclude: list[Literal[EXCLUSIONS]] = list(EXCLUSIONS)  # type: ignore[valid-type]
    statute_years: dict[str, Annotated[int, Field(ge=1)]] = {}  # country -> limitation period

    @field_validator("exclude")
    @classmethod
    def _legal(cls, value: list[str]) -> list[str]:
        missing = [e for e in MANDATORY_EXCLUSIONS if e not in value]
        if missing:
            raise ValueError(f"{missing} cannot be left out: an agency may not work such accounts")
        return value


class Economics(_Strict):
    """Inputs of the cut-off recommendation (dunning.placement.economics)."""

    cost_per_contact_minor: dict[Channel, int] = {"email": 5, "sms": 8, "letter": 120, "call": 400}
    contacts_per_month: float = Field(4.0, gt=0)
    agency_liquidation: float = Field(0.2, gt=0, le=1)  # ACA survey average ~21.7%
    horizon_days: int = Field(180, ge=30)


class Placement(_Strict):
    """Handing accounts past the cut-off to collection agencies (contract C4)."""

    enabled: bool = False
    root: str | None = None  # ObjectStoragePath URL; default: the lake root
    cutoff: Cutoff = Cutoff()
    cooling_days: int = Field(90, ge=0)  # a returned or recalled account waits this long
    encryption: Literal["AES256", "aws:kms"] = "AES256"  # server-side, on S3
    kms_key_id: str | None = None
    itemization: Literal["transaction", "last_payment"] = "transaction"
    agencies: list[Agency] = []
    economics: Economics = Economics()

    @model_validator(mode="after")
    def _agencies(self) -> Placement:
        names = [a.name for a in self.agencies]
        if len(set(names)) != len(names):
            raise ValueError(f"agencies: names must be unique, got {names}")
        if self.enabled and not self.agencies:
            raise ValueError("agencies: placement is enabled but no agency is configured")
        if self.encryption == "aws:kms" and not self.kms_key_id:
            raise ValueError("kms_key_id: encryption aws:kms needs the key id")
        return self


class Reports(_Strict):
    """Windows of the daily KPI report: what finance reads each morning."""

    # DSO, CEI, collections and promise-kept over this many days up to the run's date; the
    # beginning AR of CEI and the earlier side of roll and cure rates are the snapshot then.
    period_days: int = Field(30, ge=1, le=366)
    countback_periods: int = Field(6, ge=1, le=24)  # sales periods countback DSO may use
    # Recovery of the debtors segmented this many days ago (their overdue balance then, the
    # money allocated to them since); fewer when the ledger does not go back that far.
    recovery_days: int = Field(14, ge=1, le=366)
    trend_days: int = Field(30, ge=1, le=366)  # snapshots in the aging trend
    confidence: float = Field(0.95, gt=0.5, lt=1)  # of the uplift interval


class Alerts(_Strict):
    """Who hears about a daily run that failed or is late.  No recipients: no alerts (the
    Airflow UI still shows the run's state)."""

    email_to: list[str] = []
    email_from: str = "Dunning <dunning@example.com>"
    smtp_conn_id: str = "smtp_default"
    # The daily run should be done this long after it was queued (06:00 + 180 min = 09:00 with
    # the default schedule); past it the triggerer e-mails, whether the run is stuck or slow.
    finish_within_minutes: int | None = Field(180, ge=1)


class Config(_Strict):
    portfolio: Portfolio
    schedule: Schedule = Schedule()
    sources: list[Source]
    gates: Gates = Gates()
    aging: Aging = Aging()
    history: History = History()
    risk: Risk = Risk()
    strategies: dict[str, Strategy] = DEFAULT_STRATEGIES
    segments: list[Segment] = [Segment(name="all", strategy="standard")]
    experiments: list[Experiment] = []
    compliance: Policy = Policy()
    channels: Channels = Channels()
    portal: Portal = Portal()
    feedback: Feedback = Feedback()
    payments: Payments = Payments()
    placement: Placement = Placement()
    reports: Reports = Reports()
    alerts: Alerts = Alerts()
    # Message templates (see dunning.templates); default: the repository's include/templates.
    templates: Path | None = None
    source_file: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _unique_sources(self) -> Config:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {dupes}")
        if not any(s.dataset == "invoices" for s in self.sources):
            raise ValueError("at least one source must have dataset: invoices")
        self._check_segments()
        self._check_experiments()
        self._check_placement()
        return self

    def _check_segments(self) -> None:
        names = [s.name for s in self.segments]
        if len(set(names)) != len(names):
            raise ValueError(f"segments: names must be unique, got {names}")
        for i, seg in enumerate(self.segments):
            if seg.strategy is not None and seg.strategy not in self.strategies:
                raise ValueError(
                    f"segments.{i}.strategy: no strategy {seg.strategy!r}; "
                    f"defined: {sorted(self.strategies)}"
                )
        given = [s.priority for s in self.segments if s.priority is not None]
        if given and len(given) != len(self.segments):
            raise ValueError("segments: give every segment a priority, or none (list order)")
        for a, b in zip(self.ordered_segments(), self.ordered_segments()[1:], strict=False):
            if a.priority is not None and a.priority == b.priority:
                raise ValueError(
                    f"segments: {a.name!r} and {b.name!r} share priority {a.priority}, so a "
                    "debtor matching both has no order"
                )
        last = self.ordered_segments()[-1]
        if last.when:
            raise ValueError(
                f"segments: the last segment ({last.name!r}) must have no conditions, so every "
                "debtor gets exactly one segment"
            )

    def _check_experiments(self) -> None:
        segments = {s.name: s for s in self.segments}
        for i, exp in enumerate(self.experiments):
            for name in exp.segments:
                if name not in segments:
                    raise ValueError(f"experiments.{i}.segments: no segment {name!r}")
            steps = {st.name for st in self._experiment_steps(exp)}
            for arm in exp.arms:
                unknown = sorted((set(arm.templates) | set(arm.offsets)) - steps)
                if unknown:
                    raise ValueError(
                        f"experiments.{i}.arms.{arm.name}: no step named {unknown} in the "
                        "strategies of its segments"
                    )

    def _check_placement(self) -> None:
        segments = {s.name for s in self.segments}
        for name in self.placement.cutoff.by_segment:
            if name not in segments:
                raise ValueError(f"placement.cutoff.by_segment: no segment {name!r}")
        for i, agency in enumerate(self.placement.agencies):
            unknown = sorted(set(agency.segments) - segments)
            if unknown:
                raise ValueError(f"placement.agencies.{i}.segments: no segment {unknown}")

    def ordered_segments(self) -> list[Segment]:
        if all(s.priority is not None for s in self.segments):
            return sorted(self.segments, key=lambda s: s.priority)
        return list(self.segments)

    def templates_dir(self) -> Path:
        from dunning.templates import REPO_TEMPLATES

        return self.resolve(self.templates) if self.templates else REPO_TEMPLATES

    def template_uses(self) -> dict[tuple[str, str], str]:
        """(channel, template) -> the first config key that sends it: a step, or an arm's
        replacement template on the channels of the steps it replaces in the strategies of the
        experiment's segments."""
        uses: dict[tuple[str, str], str] = {}
        for sname, strategy in self.strategies.items():
            for i, step in enumerate(strategy.steps):
                for channel in step.channels:
                    uses.setdefault(
                        (channel, step.template), f"strategies.{sname}.steps.{i}.template"
                    )
                    if strategy.on_broken_promise and channel in BROKEN_PROMISE_CHANNELS:
                        uses.setdefault(
                            (channel, strategy.on_broken_promise),
                            f"strategies.{sname}.on_broken_promise",
                        )
        for i, exp in enumerate(self.experiments):
            for arm in exp.arms:
                for step_name, template in arm.templates.items():
                    key = f"experiments.{i}.arms.{arm.name}.templates.{step_name}"
                    for step in self._experiment_steps(exp):
                        if step.name == step_name:
                            for channel in step.channels:
                                uses.setdefault((channel, template), key)
        return uses

    def _experiment_steps(self, exp: Experiment) -> list[Step]:
        """The steps an experiment's arms can change: those of its segments' strategies."""
        segments = {s.name: s for s in self.segments}
        covered = [segments[n] for n in exp.segments if n in segments] or list(self.segments)
        names = dict.fromkeys(seg.strategy for seg in covered if seg.strategy)
        return [st for name in names for st in self.strategies[name].steps]

    def check_templates(self) -> list[str]:
        """Every template the strategies and experiments send exists for each of its channels
        in the default locale; problems come back as "key: message" lines."""
        from dunning.templates import DEFAULT_LOCALE, missing_parts

        directory = self.templates_dir()
        problems = []
        for (channel, template), key in self.template_uses().items():
            missing = missing_parts(directory, channel, template, DEFAULT_LOCALE)
            if missing:
                problems.append(
                    f"{key}: no {channel} template {template!r} in {directory} "
                    f"(missing {', '.join(missing)})"
                )
        return problems

    def lint_templates(self) -> list:
        """The content lint (``dunning.templates.lint``) for this portfolio's collector mode and
        California licence, on every template the strategies send."""
        from dunning.templates import lint

        return lint(
            self.templates_dir(),
            self.template_uses(),
            third_party=self.portfolio.collector == "third_party",
            licence_required=self.compliance.collects_in_california,
        )

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
        cfg = Config.model_validate({**raw, "source_file": file.resolve()})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{file}: {problems}") from exc
    problems = cfg.check_templates() or [str(p) for p in cfg.lint_templates()]
    if problems:
        raise ConfigError(f"{file}: " + "; ".join(problems))
    return cfg


def config_path() -> Path:
    return Path(os.environ.get("DUNNING_CONFIG") or DEFAULT_CONFIG)


def ledger_url() -> str:
    return os.environ.get("DUNNING_LEDGER_URL") or DEFAULT_LEDGER_URL


def lake_url() -> str:
    return os.environ.get("DUNNING_LAKE") or DEFAULT_LAKE


def parse_date(value: str | date) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)
