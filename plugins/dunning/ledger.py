"""The ledger: the collections system of record, in SQLAlchemy 2 with Alembic migrations.

SQLite is the embedded default and PostgreSQL the production database; both run the same
migrations.  Loading a business date replaces that date's snapshot, so re-running a day (a retry,
a backfill) gives the same ledger, never a second copy.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from pyarrow import csv as pacsv
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dunning import clock, lake
from dunning.errors import DateBusy

MIGRATIONS = Path(__file__).with_name("migrations")
INSERT_CHUNK = 50_000


class Base(DeclarativeBase):
    pass


class Snapshot(Base):
    """One source delivered for one business date: what was read, kept and held back."""

    __tablename__ = "snapshots"
    __table_args__ = (sa.UniqueConstraint("as_of", "source", name="uq_snapshots_as_of_source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    as_of: Mapped[date] = mapped_column(sa.Date, index=True)
    source: Mapped[str] = mapped_column(sa.String(64))
    dataset: Mapped[str] = mapped_column(sa.String(16))
    source_file: Mapped[str] = mapped_column(sa.String(512))
    source_as_of: Mapped[date | None] = mapped_column(sa.Date)
    rows_read: Mapped[int]
    rows_loaded: Mapped[int]
    rows_quarantined: Mapped[int]
    open_minor: Mapped[dict] = mapped_column(sa.JSON, default=dict)  # currency -> minor units
    lake_key: Mapped[str] = mapped_column(sa.String(512))
    loaded_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class Debtor(Base):
    """The person or company we may contact; current attributes, refreshed by each snapshot."""

    __tablename__ = "debtors"

    debtor_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(64))
    name: Mapped[str] = mapped_column(sa.String(256))
    kind: Mapped[str] = mapped_column(sa.String(16))
    country: Mapped[str] = mapped_column(sa.String(2))
    region: Mapped[str | None] = mapped_column(sa.String(64))
    city: Mapped[str | None] = mapped_column(sa.String(128))
    postal_code: Mapped[str | None] = mapped_column(sa.String(32))
    timezones: Mapped[str] = mapped_column(sa.String(256))
    locale: Mapped[str] = mapped_column(sa.String(8))
    email: Mapped[str | None] = mapped_column(sa.String(320))
    phone: Mapped[str | None] = mapped_column(sa.String(32))
    employer_email: Mapped[bool] = mapped_column(default=False)
    consent_email: Mapped[bool] = mapped_column(default=False)
    consent_sms: Mapped[bool] = mapped_column(default=False)
    opted_out: Mapped[str | None] = mapped_column(sa.String(64))
    customer_since: Mapped[date | None] = mapped_column(sa.Date)
    first_seen_as_of: Mapped[date] = mapped_column(sa.Date)
    last_seen_as_of: Mapped[date] = mapped_column(sa.Date, index=True)


class InvoiceSnapshot(Base):
    """An open invoice as the AR system showed it on a business date (the history aging needs)."""

    __tablename__ = "invoice_snapshots"

    as_of: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    doc_type: Mapped[str] = mapped_column(sa.String(16))
    issue_date: Mapped[date] = mapped_column(sa.Date)
    due_date: Mapped[date] = mapped_column(sa.Date)
    currency: Mapped[str] = mapped_column(sa.String(3))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    open_minor: Mapped[int] = mapped_column(sa.BigInteger)
    disputed: Mapped[bool] = mapped_column(default=False)
    reference: Mapped[str | None] = mapped_column(sa.String(256))
    source_row: Mapped[int]


class QuarantinedRow(Base):
    """A row held back with its file, line, field and reason, so it can be fixed and replayed."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(primary_key=True)
    as_of: Mapped[date] = mapped_column(sa.Date, index=True)
    source: Mapped[str] = mapped_column(sa.String(64))
    source_file: Mapped[str] = mapped_column(sa.String(512))
    source_row: Mapped[int]
    field: Mapped[str] = mapped_column(sa.String(64))
    reason: Mapped[str] = mapped_column(sa.String(32))
    message: Mapped[str] = mapped_column(sa.Text)
    value: Mapped[str | None] = mapped_column(sa.Text)
    raw: Mapped[str | None] = mapped_column(sa.Text)


class DebtorBucket(Base):
    """A debtor's aging bucket on a business date: the raw data of roll and cure rates."""

    __tablename__ = "debtor_buckets"

    as_of: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    bucket: Mapped[str] = mapped_column(sa.String(16))
    currency: Mapped[str] = mapped_column(sa.String(3))
    open_minor: Mapped[int] = mapped_column(sa.BigInteger)
    overdue_minor: Mapped[int] = mapped_column(sa.BigInteger)
    max_days_past_due: Mapped[int]


class InvoiceHistory(Base):
    """Every invoice's latest known state, closed ones included (when and how it was paid)."""

    __tablename__ = "invoice_history"

    invoice_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    doc_type: Mapped[str] = mapped_column(sa.String(16))
    issue_date: Mapped[date] = mapped_column(sa.Date)
    due_date: Mapped[date] = mapped_column(sa.Date)
    currency: Mapped[str] = mapped_column(sa.String(3))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    open_minor: Mapped[int] = mapped_column(sa.BigInteger)
    paid_date: Mapped[date | None] = mapped_column(sa.Date)
    disputed: Mapped[bool] = mapped_column(default=False)


class Payment(Base):
    """Money received, as the payment feed reported it (matching comes with reconciliation)."""

    __tablename__ = "payments"

    payment_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    debtor_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    paid_on: Mapped[date] = mapped_column(sa.Date, index=True)
    currency: Mapped[str] = mapped_column(sa.String(3))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    method: Mapped[str | None] = mapped_column(sa.String(32))
    reference: Mapped[str | None] = mapped_column(sa.Text)


class ContactAttempt(Base):
    """A contact made to a debtor and its outcome (earlier systems' history, then our own)."""

    __tablename__ = "contact_attempts"

    contact_id: Mapped[str] = mapped_column(sa.String(96), primary_key=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)
    channel: Mapped[str] = mapped_column(sa.String(16))
    template: Mapped[str | None] = mapped_column(sa.String(64))
    outcome: Mapped[str | None] = mapped_column(sa.String(32))
    connected: Mapped[bool | None]
    conversation: Mapped[bool | None]


class ComplianceEvent(Base):
    """Something that changes whether and how we may contact a debtor, from its effective date."""

    __tablename__ = "compliance_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    event: Mapped[str] = mapped_column(sa.String(32))
    channel: Mapped[str | None] = mapped_column(sa.String(16))
    effective_date: Mapped[date] = mapped_column(sa.Date)
    detail: Mapped[str | None] = mapped_column(sa.Text)


class ContactDecision(Base):
    """The compliance gate's decision on one planned contact: what was checked, what blocked it
    and under which rules (Reg F 1006.100: kept at least three years).  A re-run of the day
    replaces the decisions nothing was sent under; one a message was sent under is kept, and a
    new decision for it becomes the next ``version`` (the old one ``superseded_at`` then)."""

    __tablename__ = "contact_decisions"

    contact_key: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True, default=1)
    as_of: Mapped[date] = mapped_column(sa.Date, index=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    channel: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16))  # allowed | scheduled | blocked
    reasons: Mapped[str] = mapped_column(sa.String(400))  # sorted codes, comma-joined
    send_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    rules_version: Mapped[str] = mapped_column(sa.String(64))
    snapshot_ids: Mapped[str] = mapped_column(sa.String(400))
    decided_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    superseded_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


CONTACTED_WHERE = "status IN ('sending', 'sent', 'unknown')"


class Message(Base):
    """One contact sent (or being sent) by a wave: the exactly-once record (invariant 1).

    The row is the claim: it is inserted (``sending``) before the provider is called, so the
    primary key on ``contact_key`` lets exactly one process ever send it; it becomes ``sent``
    (with the provider's id) or ``failed`` after.  A row left ``sending`` by a crash is marked
    ``unknown`` for review and never resent blindly.
    """

    __tablename__ = "messages"
    # One message per debtor, channel and day, whatever its contact key: a re-run after a late
    # file or a corrected config may plan another step, never a second reminder that day.
    __table_args__ = (
        sa.Index(
            "uq_messages_contacted",
            "as_of",
            "debtor_id",
            "channel",
            unique=True,
            sqlite_where=sa.text(CONTACTED_WHERE),
            postgresql_where=sa.text(CONTACTED_WHERE),
        ),
    )

    contact_key: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    as_of: Mapped[date] = mapped_column(sa.Date, index=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    channel: Mapped[str] = mapped_column(sa.String(16))
    template: Mapped[str] = mapped_column(sa.String(64))
    template_version: Mapped[str] = mapped_column(sa.String(16))
    locale: Mapped[str] = mapped_column(sa.String(8))
    recipient: Mapped[str | None] = mapped_column(sa.String(320))
    # sending | sent | failed | unknown (outcome lost in a crash: for review, not resent)
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    claim: Mapped[str] = mapped_column(sa.String(128))  # run/attempt that inserted the row
    claimed_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    provider: Mapped[str | None] = mapped_column(sa.String(32))
    provider_id: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    delivery_status: Mapped[str | None] = mapped_column(sa.String(32))
    delivery_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(sa.Text)
    page_key: Mapped[str | None] = mapped_column(sa.String(256))
    forced_reason: Mapped[str | None] = mapped_column(sa.Text)  # a backfill sent on purpose
    # A reviewed unknown outcome: who said what, when (the note is in ``error``).
    reviewed_by: Mapped[str | None] = mapped_column(sa.String(128))
    reviewed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class ChannelEvent(Base):
    """What came back from a channel (bounce, unsubscribe, STOP, delivery receipt).

    Kept apart from the AR history exports (which a history load replaces wholesale): these are
    our own providers' events, read by the compliance gate together with the exported ones.
    ``event_id`` is the provider's (or the bounce's Message-ID), so reading a feed twice adds
    nothing.
    """

    __tablename__ = "channel_events"
    __table_args__ = (sa.UniqueConstraint("source", "event_id", name="uq_channel_events_source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(64))
    event_id: Mapped[str] = mapped_column(sa.String(200))
    contact_key: Mapped[str | None] = mapped_column(sa.String(200), index=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    channel: Mapped[str] = mapped_column(sa.String(16))
    # bounced | unsubscribed | sms_stop | delivered | failed | opt_in
    event: Mapped[str] = mapped_column(sa.String(32))
    effective_date: Mapped[date] = mapped_column(sa.Date)
    received_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    detail: Mapped[str | None] = mapped_column(sa.Text)


class PaymentLine(Base):
    """One line of a payment feed as it arrived (``raw`` kept for audit) and what became of it.

    ``line_id`` hashes the feed, file and content, so a re-delivered file adds nothing;
    ``fingerprint`` ignores the feed, so the same money reported by two feeds is caught.
    """

    __tablename__ = "payment_lines"

    line_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))  # read by booking-date range
    as_of: Mapped[date] = mapped_column(sa.Date, index=True)  # the run that reconciled it
    feed: Mapped[str] = mapped_column(sa.String(64))
    format: Mapped[str] = mapped_column(sa.String(16))
    source_file: Mapped[str] = mapped_column(sa.String(512))
    source_row: Mapped[int]
    kind: Mapped[str] = mapped_column(sa.String(16))
    booked_on: Mapped[date] = mapped_column(sa.Date, index=True)
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    payer_name: Mapped[str | None] = mapped_column(sa.String(256))
    payer_account: Mapped[str | None] = mapped_column(sa.String(64))
    reference: Mapped[str | None] = mapped_column(sa.Text)
    debtor_hint: Mapped[str | None] = mapped_column(sa.String(64))
    invoice_hint: Mapped[str | None] = mapped_column(sa.String(64))
    external_id: Mapped[str | None] = mapped_column(sa.String(128), index=True)
    original_id: Mapped[str | None] = mapped_column(sa.String(128))
    decline_code: Mapped[str | None] = mapped_column(sa.String(64))
    network: Mapped[str | None] = mapped_column(sa.String(32))
    network_code: Mapped[str | None] = mapped_column(sa.String(8))
    advice_code: Mapped[str | None] = mapped_column(sa.String(8))
    raw: Mapped[str] = mapped_column(sa.Text)
    # applied | exception | duplicate | declined | ignored (not customer money: fees, outgoing)
    status: Mapped[str] = mapped_column(sa.String(16))
    debtor_id: Mapped[str | None] = mapped_column(sa.String(64))
    method: Mapped[str | None] = mapped_column(sa.String(32))
    confidence: Mapped[float | None]
    duplicate_of: Mapped[str | None] = mapped_column(sa.String(64))


class Allocation(Base):
    """Money from one payment line applied to one invoice (negative: a reversal reopening it;
    no invoice: credit held on the debtor's account)."""

    __tablename__ = "allocations"

    id: Mapped[int] = mapped_column(primary_key=True)
    as_of: Mapped[date] = mapped_column(sa.Date, index=True)
    line_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    booked_on: Mapped[date] = mapped_column(sa.Date, index=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64))
    source: Mapped[str | None] = mapped_column(sa.String(64))
    invoice_id: Mapped[str | None] = mapped_column(sa.String(64))
    currency: Mapped[str] = mapped_column(sa.String(3))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    method: Mapped[str] = mapped_column(sa.String(32))
    confidence: Mapped[float]


class PaymentException(Base):
    """A payment line in front of a person: unmatched, unsure, a duplicate, an overpayment."""

    __tablename__ = "payment_exceptions"

    line_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    as_of: Mapped[date] = mapped_column(sa.Date, index=True)
    reason: Mapped[str] = mapped_column(sa.String(32))
    detail: Mapped[str | None] = mapped_column(sa.Text)  # suggestion, as JSON
    status: Mapped[str] = mapped_column(sa.String(16), default="open")  # open | resolved


class Instalment(Base):
    """One instalment of a promise to pay (a single one) or of a payment plan, and how it went."""

    __tablename__ = "instalments"

    promise_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16))  # promise | plan
    channel: Mapped[str | None] = mapped_column(sa.String(16))
    created_on: Mapped[date] = mapped_column(sa.Date)
    currency: Mapped[str] = mapped_column(sa.String(3))
    due_on: Mapped[date] = mapped_column(sa.Date)
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    paid_minor: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(16))  # pending | kept | broken
    evaluated_as_of: Mapped[date] = mapped_column(sa.Date)


class PaymentFailure(Base):
    """A declined card charge, how the decline reads, and what the processor is told to do."""

    __tablename__ = "payment_failures"

    line_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    as_of: Mapped[date] = mapped_column(sa.Date, index=True)
    charge_ref: Mapped[str] = mapped_column(sa.String(128), index=True)
    debtor_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    failed_on: Mapped[date] = mapped_column(sa.Date)
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    network: Mapped[str | None] = mapped_column(sa.String(32))
    decline_code: Mapped[str | None] = mapped_column(sa.String(64))
    category: Mapped[str] = mapped_column(sa.String(16))  # soft | update | hard
    action: Mapped[str] = mapped_column(sa.String(24))  # retry | request_new_method | stop
    retry_on: Mapped[date | None] = mapped_column(sa.Date)
    attempt: Mapped[int]
    reason: Mapped[str] = mapped_column(sa.String(200))


class PayerAccount(Base):
    """A bank account seen paying for one debtor with certainty: it identifies them next time."""

    __tablename__ = "payer_accounts"

    account: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64))
    learned_on: Mapped[date] = mapped_column(sa.Date)


class PlacedAccount(Base):
    """An account handed to a collection agency, and how its time there ends.

    The partial unique index is invariant 5 in the database: one ``active`` placement per
    debtor, so two runs (or two agencies) can never hold the same account at once.
    """

    __tablename__ = "placements"
    __table_args__ = (
        sa.Index(
            "uq_placements_active_debtor",
            "debtor_id",
            unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        ),
    )

    account_ref: Mapped[str] = mapped_column(sa.String(96), primary_key=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    agency: Mapped[str] = mapped_column(sa.String(64), index=True)
    segment: Mapped[str | None] = mapped_column(sa.String(64))
    placed_on: Mapped[date] = mapped_column(sa.Date, index=True)
    currency: Mapped[str] = mapped_column(sa.String(3))
    balance_minor: Mapped[int] = mapped_column(sa.BigInteger)
    principal_minor: Mapped[int] = mapped_column(sa.BigInteger)
    interest_minor: Mapped[int] = mapped_column(sa.BigInteger)
    fees_minor: Mapped[int] = mapped_column(sa.BigInteger)
    days_past_due: Mapped[int]
    file_key: Mapped[str] = mapped_column(sa.String(512))
    # active | recalled | returned | closed (paid through the agency)
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    acknowledged_on: Mapped[date | None] = mapped_column(sa.Date)
    collected_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    commission_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    ended_on: Mapped[date | None] = mapped_column(sa.Date)
    end_reason: Mapped[str | None] = mapped_column(sa.String(32))
    recall_file_key: Mapped[str | None] = mapped_column(sa.String(512))


class AgencyFile(Base):
    """A file exchanged with an agency, either way: published placements and recalls, and the
    acknowledgements, payments and closures that come back (loaded once, by content hash)."""

    __tablename__ = "agency_files"

    sha256: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    agency: Mapped[str] = mapped_column(sa.String(64), index=True)
    as_of: Mapped[date] = mapped_column(sa.Date, index=True)
    direction: Mapped[str] = mapped_column(sa.String(8))  # out | in
    kind: Mapped[str] = mapped_column(sa.String(16))  # placements | recalls | ack | payments | ...
    name: Mapped[str] = mapped_column(sa.String(512))
    rows: Mapped[int]
    total_minor: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(16))  # published | loaded | rejected
    error: Mapped[str | None] = mapped_column(sa.Text)
    recorded_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class AgencyPayment(Base):
    """Money an agency collected on a placed account, with its commission and what it remits."""

    __tablename__ = "agency_payments"

    agency: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    payment_ref: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    account_ref: Mapped[str] = mapped_column(sa.String(96), index=True)
    debtor_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    paid_on: Mapped[date] = mapped_column(sa.Date)
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)  # negative: a reversal
    commission_minor: Mapped[int] = mapped_column(sa.BigInteger)
    remitted_minor: Mapped[int] = mapped_column(sa.BigInteger)
    file_sha256: Mapped[str] = mapped_column(sa.String(64))


class RunLease(Base):
    """The business date the daily run is working on.  Two dates at once gave order-dependent
    books (a payment matched on one day was not there for the other), so a second date is
    refused while a run holds the lease; it ends with the run's summary, or after ``expires_at``
    when the run died without one."""

    __tablename__ = "run_leases"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # the DAG id
    as_of: Mapped[date] = mapped_column(sa.Date)
    run_id: Mapped[str] = mapped_column(sa.String(250))
    taken_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


INVOICE_COLUMNS = [c.name for c in InvoiceSnapshot.__table__.columns]
DEBTOR_COLUMNS = [c.name for c in Debtor.__table__.columns]
QUARANTINE_COLUMNS = [c.name for c in QuarantinedRow.__table__.columns if c.name != "id"]


def engine_for(url: str) -> sa.Engine:
    """SQLite gets a busy timeout and WAL so a reader (the UI, a report) never blocks a load."""
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _private_sqlite_file(url: str) -> None:
    """A new SQLite ledger file is owner-only, like the lake: it holds names and addresses
    (SQLite gives its WAL and shared-memory files the database file's mode)."""
    database = sa.make_url(url).database
    if not url.startswith("sqlite") or not database or database == ":memory:":
        return
    if not os.path.exists(database):
        lake.private_dirs(os.path.dirname(os.path.abspath(database)))
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, lake.PRIVATE_FILE))


def migrate(url: str) -> None:
    """Bring the ledger schema to the newest migration; safe to call on every run."""
    _private_sqlite_file(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


@contextmanager
def ledger(url: str) -> Iterator[sa.Engine]:
    engine = engine_for(url)
    try:
        yield engine
    finally:
        engine.dispose()


def previous_snapshots(engine: sa.Engine, as_of: date) -> dict[str, dict]:
    """The newest earlier snapshot of each source: the baseline the drift gates compare with."""
    latest = (
        sa.select(Snapshot.source, sa.func.max(Snapshot.as_of).label("as_of"))
        .where(Snapshot.as_of < as_of)
        .group_by(Snapshot.source)
        .subquery()
    )
    query = sa.select(Snapshot).join(
        latest, (Snapshot.source == latest.c.source) & (Snapshot.as_of == latest.c.as_of)
    )
    with sa.orm.Session(engine) as session:
        return {
            s.source: {
                "as_of": s.as_of.isoformat(),
                "rows": s.rows_read,
                "open_minor": s.open_minor,
            }
            for s in session.scalars(query)
        }


def load_snapshot(
    engine: sa.Engine,
    as_of: date,
    invoices: pd.DataFrame,
    debtors: pd.DataFrame,
    quarantine: pd.DataFrame,
    stats: dict[str, dict],
    lake_keys: dict[str, str],
) -> dict[str, int]:
    """Replace the ledger's view of ``as_of`` in one transaction; returns row counts loaded."""
    sources = list(stats)
    with engine.begin() as conn:
        for table in (InvoiceSnapshot, QuarantinedRow, Snapshot):
            conn.execute(sa.delete(table).where(table.as_of == as_of, table.source.in_(sources)))
        inv = invoices.assign(as_of=as_of)
        bulk_insert(conn, InvoiceSnapshot.__table__, inv[INVOICE_COLUMNS])
        q = quarantine.assign(as_of=as_of)
        bulk_insert(conn, QuarantinedRow.__table__, q[QUARANTINE_COLUMNS])
        if len(debtors):
            _upsert_debtors(conn, debtors, as_of)
        now = clock.utcnow()
        conn.execute(
            sa.insert(Snapshot.__table__),
            [
                {
                    "as_of": as_of,
                    "source": name,
                    "dataset": st["dataset"],
                    "source_file": st["file"],
                    "source_as_of": date.fromisoformat(st["source_as_of"])
                    if st.get("source_as_of")
                    else None,
                    "rows_read": st["rows_read"],
                    "rows_loaded": st["rows_clean"],
                    "rows_quarantined": st["rows_quarantined"],
                    "open_minor": st.get("open_minor", {}),
                    "lake_key": lake_keys.get(name, ""),
                    "loaded_at": now,
                }
                for name, st in stats.items()
            ],
        )
    return {"invoices": len(invoices), "debtors": len(debtors), "quarantine": len(quarantine)}


def _upsert_debtors(conn: sa.Connection, debtors: pd.DataFrame, as_of: date) -> None:
    """Newest facts win: a backfill for an older date must not bring back a consent or an
    opt-out the debtor has since changed; it can only move ``first_seen_as_of`` earlier."""
    cols = [c for c in DEBTOR_COLUMNS if c not in ("first_seen_as_of", "last_seen_as_of")]
    frame = debtors[cols].assign(first_seen_as_of=as_of, last_seen_as_of=as_of)
    newer = 'excluded."last_seen_as_of" >= "debtors"."last_seen_as_of"'
    sets = [
        f'"{c}" = CASE WHEN {newer} THEN excluded."{c}" ELSE "debtors"."{c}" END'
        for c in [*cols, "last_seen_as_of"]
        if c != "debtor_id"
    ]
    sets.append(
        '"first_seen_as_of" = CASE WHEN excluded."first_seen_as_of" < "debtors"."first_seen_as_of"'
        ' THEN excluded."first_seen_as_of" ELSE "debtors"."first_seen_as_of" END'
    )
    bulk_insert(
        conn,
        Debtor.__table__,
        frame,
        on_conflict=f' ON CONFLICT ("debtor_id") DO UPDATE SET {", ".join(sets)}',
    )


def _sql_values(frame: pd.DataFrame) -> pd.DataFrame:
    """Dates as ISO text, NA as None: what both drivers' bulk paths take, built vectorized."""
    out = {}
    for col in frame.columns:
        series = frame[col]
        first = series.dropna().iloc[0] if series.notna().any() else None
        if pd.api.types.is_datetime64_any_dtype(series) or isinstance(first, date):
            series = pd.to_datetime(series).dt.strftime("%Y-%m-%d")
        out[col] = series.astype(object).where(series.notna(), None)
    return pd.DataFrame(out, index=frame.index)


def bulk_insert(
    conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, on_conflict: str = ""
) -> None:
    """Bulk insert (``on_conflict``: an ON CONFLICT clause for upserts) at driver speed.

    PostgreSQL gets COPY (through a temp table when upserting); SQLite the driver's executemany
    on plain tuples -- both an order of magnitude faster than ORM-style rows.
    """
    if frame.empty:
        return
    values = _sql_values(frame)
    cols = ", ".join(f'"{c}"' for c in frame.columns)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        target = f'"{table.name}"'
        raw = conn.connection.dbapi_connection
        with raw.cursor() as cur:
            if on_conflict:
                target = f'"_stage_{table.name}"'
                cur.execute(f'CREATE TEMP TABLE {target} (LIKE "{table.name}") ON COMMIT DROP')
            _copy(cur, f"COPY {target} ({cols}) FROM STDIN WITH (FORMAT csv)", values)
            if on_conflict:
                cur.execute(
                    f'INSERT INTO "{table.name}" ({cols}) SELECT {cols} FROM {target}{on_conflict}'
                )
        return
    if dialect != "sqlite":
        raise ValueError(f"the ledger supports sqlite and postgresql, not {dialect}")
    marks = ", ".join("?" * len(frame.columns))
    sql = f'INSERT INTO "{table.name}" ({cols}) VALUES ({marks}){on_conflict}'
    rows = list(values.itertuples(index=False, name=None))
    cursor = conn.connection.cursor()
    try:
        for start in range(0, len(rows), INSERT_CHUNK):
            cursor.executemany(sql, rows[start : start + INSERT_CHUNK])
    finally:
        cursor.close()


def _copy(cursor: Any, sql: str, values: pd.DataFrame) -> None:
    """CSV in PostgreSQL's own dialect: every value quoted, NULL an unquoted empty field, so
    no text ("\\N", a bare carriage return, an empty string) can be mistaken for anything else.
    psycopg2 and psycopg 3 take the same bytes through different calls."""
    buf = io.BytesIO()
    table = pa.Table.from_pandas(values, preserve_index=False)
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
    data = buf.getvalue()
    if hasattr(cursor, "copy_expert"):  # psycopg2
        cursor.copy_expert(sql, io.BytesIO(data))
    else:  # psycopg 3
        with cursor.copy(sql) as copy:
            copy.write(data)


def snapshot_rows(engine: sa.Engine, as_of: date) -> list[dict]:
    with sa.orm.Session(engine) as session:
        rows = session.scalars(sa.select(Snapshot).where(Snapshot.as_of == as_of))
        return [
            {
                "source": s.source,
                "rows_read": s.rows_read,
                "rows_loaded": s.rows_loaded,
                "rows_quarantined": s.rows_quarantined,
                "open_minor": json.loads(json.dumps(s.open_minor)),
            }
            for s in rows
        ]


def load_from_lake(engine: sa.Engine, as_of: date, root: Any, validated: dict) -> dict[str, int]:
    """Load the validated snapshot of ``as_of`` from the lake into the ledger (replacing it)."""
    from dunning.quality import read_snapshots

    invoices, debtors, stats = read_snapshots(root, validated)
    if invoices.empty:
        invoices = pd.DataFrame(columns=[c for c in INVOICE_COLUMNS if c != "as_of"])
    quarantine = pd.concat(
        [lake.read_parquet(root / key) for key in validated["quarantine"].values()],
        ignore_index=True,
    )
    return load_snapshot(
        engine, as_of, invoices, debtors, quarantine, stats, validated["snapshots"]
    )


def save_debtor_buckets(engine: sa.Engine, as_of: date, buckets: pd.DataFrame) -> int:
    """Replace the debtor buckets of ``as_of`` in one transaction; returns the rows saved.

    Delete-then-insert like ``load_snapshot``: a re-run day (retry, backfill) leaves one row per
    debtor, never a second copy (and a debtor settled before the re-run drops out of that day).
    """
    columns = [c.name for c in DebtorBucket.__table__.columns]
    if len(buckets) and (pd.to_datetime(buckets["as_of"]) != pd.Timestamp(as_of)).any():
        raise ValueError(f"save_debtor_buckets({as_of}): rows of another as_of in the frame")
    with engine.begin() as conn:
        conn.execute(sa.delete(DebtorBucket).where(DebtorBucket.as_of == as_of))
        bulk_insert(conn, DebtorBucket.__table__, buckets.assign(as_of=as_of)[columns])
    return len(buckets)


# A claimed message counts as a contact whatever its outcome: "sending" and "unknown" may well
# have reached the debtor, so the cadence and the frequency caps must not assume they did not.
CONTACTED = ("sending", "sent", "unknown")


def sent_contacts(
    conn: sa.Connection, start: datetime, end: datetime, *, channels: tuple[str, ...] | None = None
) -> pd.DataFrame:
    """Our own waves' contacts in ``[start, end)`` (debtor_id, at, channel, template), shaped like
    the AR history's contact attempts so the cadence and the compliance gate read both."""
    m = Message.__table__.c
    at = sa.func.coalesce(m.sent_at, m.claimed_at)
    query = sa.select(m.debtor_id, at.label("at"), m.channel, m.template).where(
        m.status.in_(CONTACTED), at >= start, at < end
    )
    if channels is not None:
        query = query.where(m.channel.in_(channels))
    frame = pd.read_sql(query, conn)
    frame["at"] = pd.to_datetime(frame["at"], utc=True, format="mixed")
    return frame


def placed_debtors(engine: sa.Engine, as_of: date) -> pd.Series:
    """Debtors with an agency on ``as_of``: the planner's ``placed`` stop condition.  Read by
    date, so a backfill sees who was placed then (placed on or before, not yet ended)."""
    t = PlacedAccount.__table__.c
    query = sa.select(t.debtor_id).where(
        t.placed_on <= as_of, sa.or_(t.ended_on.is_(None), t.ended_on > as_of)
    )
    with engine.connect() as conn:
        return pd.read_sql(query, conn)["debtor_id"]


def take_lease(
    engine: sa.Engine, name: str, as_of: date, run_id: str, now: datetime, hours: float
) -> None:
    """Hold ``name`` for ``as_of``, or raise ``DateBusy`` naming the date and run that hold it.
    Another run of the same date may share it (its claims keep that safe); an expired lease is
    taken over.  The primary key decides between two runs taking it at the same moment."""
    t = RunLease.__table__
    row = {
        "name": name,
        "as_of": as_of,
        "run_id": run_id,
        "taken_at": now,
        "expires_at": now + timedelta(hours=hours),
    }
    with engine.begin() as conn:
        conn.execute(
            t.delete().where(t.c.name == name, (t.c.expires_at < now) | (t.c.as_of == as_of))
        )
        conn.execute(insert_ignore(conn, t, ["name"]), [row])
        held = conn.execute(sa.select(t).where(t.c.name == name)).one()
    if held.as_of != as_of:
        raise DateBusy(
            f"{name}: the run {held.run_id} is working on {held.as_of} (since "
            f"{held.taken_at:%Y-%m-%d %H:%M} UTC); a run for {as_of} waits until it has finished. "
            "Dates run one at a time: backfill with --max-active-runs 1"
        )


def release_lease(engine: sa.Engine, name: str, run_id: str) -> None:
    t = RunLease.__table__
    with engine.begin() as conn:
        conn.execute(t.delete().where(t.c.name == name, t.c.run_id == run_id))


def insert_ignore(conn: sa.Connection, table: sa.Table, keys: list[str] | None) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` on the ledger's dialect: how a claim or a
    feed event is written once, whoever writes it first (``keys`` None: any unique conflict)."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(conn.dialect.name)
    if dialect is None:
        raise ValueError(f"the ledger supports sqlite and postgresql, not {conn.dialect.name}")
    return dialect.insert(table).on_conflict_do_nothing(index_elements=keys)
