"""Reminder waves: the day's allowed contacts rendered into messages and sent, each exactly once.

Two steps, so a crash in one channel never re-renders or re-sends another:

1. ``prepare_wave`` renders every contact the gate allowed (or scheduled) into its channel's
   words -- one message per debtor listing all open, undisputed invoices in the debtor's language
   with money and dates as the debtor's country writes them -- and publishes each debtor's
   personal payment page.  A dry run, a backfill or a late run writes previews to the lake
   instead and sends nothing (invariant 2).
2. ``send_wave`` (one call per channel) asks the compliance gate again at the real clock, then
   sends with the exactly-once protocol of invariant 1: the ledger row in ``messages`` *is* the
   claim, inserted before the provider call under the contact key's primary key and confirmed
   after; a row a crash left ``sending`` becomes ``unknown`` for review and is never resent.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import sqlalchemy as sa

from dunning import clock, compliance, lake, runs
from dunning.channels import ChannelOutage, Outcome, ProviderError
from dunning.config import Config
from dunning.ledger import Debtor, InvoiceSnapshot, Message, insert_ignore
from dunning.planning import unit_hash
from dunning.quality import isin
from dunning.schema import LOCALES
from dunning.templates import (
    CHANNEL_PARTS,
    DEFAULT_LOCALE,
    babel_locale,
    direction,
    file_name,
    format_day,
    format_money,
    render,
)

SENDABLE = ("allowed", "scheduled")
PAGE_DAYS_TO_FIRST_INSTALMENT = 14
PUBLISH_THREADS = 16
WAVE_COLUMNS = (
    "contact_key",
    "debtor_id",
    "channel",
    "template",
    "template_version",
    "locale",
    "recipient",
    "subject",
    "html",
    "text",
    "page_key",
    "page_url",
    "unsubscribe_url",
    "name",
    "timezones",
    "address",
    "country",
    "currency",
    "balance",
    "balance_minor",
    "invoices",
    "send_at",
)


@dataclass(frozen=True)
class Mode:
    """Whether this run sends (``send``) and why: send, forced, dry_run, backfill or late."""

    send: bool
    why: str
    forced_reason: str | None = None


def sending_mode(run: dict, now: pd.Timestamp, zone: str) -> Mode:
    """The run's mode (``runs.run_mode``) asked again at the real clock: a date that ran out
    while the run was under way is late now, and a late run's reminders do not go out."""
    mode = runs.run_mode(run, now.tz_convert(zone).date())
    if mode == "live":
        return Mode(True, "send")
    return Mode(mode == "forced", mode, run.get("force_reason") if mode == "forced" else None)


# --- building the messages -----------------------------------------------------------------------


@cache
def template_version(directory: Path, channel: str, template: str, locale: str) -> str:
    """A short hash of the files a message rendered from: the audit trail's template version."""
    digest = hashlib.sha256()
    for part in CHANNEL_PARTS[channel]:
        path = directory / file_name(channel, template, locale, part)
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()[:12]


@cache
def _template_locale(directory: Path, channel: str, template: str, locale: str) -> str:
    """The debtor's language when the template has it, else the default (never no message)."""
    have = (directory / file_name(channel, template, locale, CHANNEL_PARTS[channel][0])).is_file()
    return locale if have else DEFAULT_LOCALE


# A debtor reached, or perhaps reached, on a channel: no second message that day on it, however
# its contact key came to differ (a re-run after a late file, a corrected config, a new model).
CONTACTED = ("sending", "sent", "unknown")


def _already(conn: sa.Connection, as_of: date) -> tuple[set[str], set[str]]:
    """The day's claimed contact keys, and its contacted ``debtor|channel`` pairs."""
    m = Message.__table__.c
    rows = conn.execute(
        sa.select(m.contact_key, m.debtor_id, m.channel, m.status).where(m.as_of == as_of)
    ).all()
    pairs = {f"{r.debtor_id}|{r.channel}" for r in rows if r.status in CONTACTED}
    return {r.contact_key for r in rows}, pairs


def _not_yet(frame: pd.DataFrame, already: tuple[set[str], set[str]]) -> pd.Series:
    keys, pairs = already
    pair = frame["debtor_id"].astype("str") + "|" + frame["channel"].astype("str")
    return ~isin(frame["contact_key"], keys) & ~isin(pair, pairs)


def _ledger_rows(
    engine: sa.Engine, as_of: date, lag_days: int
) -> tuple[pd.DataFrame, pd.DataFrame, tuple[set[str], set[str]]]:
    """Debtors, the day's invoices net of payments AR has not applied yet (so a part payment
    is never asked for again), and what was already claimed and contacted today."""
    from dunning.reconcile import open_after_payments

    d, inv = Debtor.__table__.c, InvoiceSnapshot.__table__.c
    with engine.connect() as conn:
        debtors = pd.read_sql(
            sa.select(
                d.debtor_id, d.name, d.locale, d.country, d.region, d.city, d.postal_code,
                d.email, d.phone, d.timezones,
            ),
            conn,
        )  # fmt: skip
        invoices = pd.read_sql(
            sa.select(
                inv.source, inv.debtor_id, inv.invoice_id, inv.reference, inv.due_date,
                inv.currency, inv.amount_minor, inv.open_minor, inv.disputed, inv.doc_type,
            ).where(inv.as_of == as_of),
            conn,
        )  # fmt: skip
        invoices = open_after_payments(conn, as_of, lag_days, invoices)
        done = _already(conn, as_of)
    return debtors, invoices, done


def _invoice_lists(
    invoices: pd.DataFrame, debtors: pd.DataFrame
) -> tuple[dict[str, list[dict]], pd.Series]:
    """Per debtor, the invoices a message lists -- open, not disputed (left out, not the whole
    debtor: design "Debtor, not invoice"), in the currency the debtor is chased in -- formatted
    for the debtor's locale, and the total in minor units."""
    chase = debtors.set_index("debtor_id")
    rows = invoices[
        (invoices["doc_type"] == "invoice")
        & (invoices["open_minor"] > 0)
        & ~invoices["disputed"].astype(bool)
        & isin(invoices["debtor_id"], chase.index)
    ]
    rows = rows[
        rows["currency"].to_numpy() == chase["currency"].reindex(rows["debtor_id"]).to_numpy()
    ]
    rows = rows.sort_values(["debtor_id", "due_date", "invoice_id"], ignore_index=True)
    loc = chase["babel"].reindex(rows["debtor_id"]).to_numpy()
    number = (
        rows["reference"]
        .fillna(rows["invoice_id"])
        .where(rows["reference"].fillna("").str.len() > 0, rows["invoice_id"])
    )
    amount = [
        format_money(int(v), c, lo)
        for v, c, lo in zip(rows["open_minor"], rows["currency"], loc, strict=True)
    ]
    due = [
        format_day(pd.Timestamp(v).date(), lo) for v, lo in zip(rows["due_date"], loc, strict=True)
    ]
    records = [
        {"number": n, "due_date": dd, "amount": a}
        for n, dd, a in zip(number.astype(str), due, amount, strict=True)
    ]
    ids = rows["debtor_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], int)
    ends = np.r_[starts[1:], len(ids)][: len(starts)]
    lists = {ids[s]: records[s:e] for s, e in zip(starts, ends, strict=True)}
    totals = rows.groupby("debtor_id")["open_minor"].sum()
    return lists, totals


def _address(frame: pd.DataFrame) -> pd.Series:
    """Address lines for a letter's window: name, postcode and city, region, country."""
    town = (frame["postal_code"].fillna("") + " " + frame["city"].fillna("")).str.strip()
    parts = pd.concat(
        [frame["name"].fillna(""), town, frame["region"].fillna(""), frame["country"].fillna("")],
        axis=1,
    )
    return pd.Series(
        [[p for p in row if p] for row in parts.itertuples(index=False)], index=frame.index
    )


def _page_link(cfg: Config, portal_root: Any, key: str, token: str) -> str:
    if cfg.portal.base_url:
        return f"{cfg.portal.base_url.rstrip('/')}/{token}/"
    return lake.public_url(portal_root / key, cfg.portal.link_days * 86_400)


def _plans(total: int, currency: str, loc: str, months: list[int], first_due: str) -> list[dict]:
    """Instalment options: equal parts rounded up to the minor unit (the last one pays less)."""
    return [
        {"count": n, "amount": format_money(-(-total // n), currency, loc), "first_due": first_due}
        for n in months
        if n > 1
    ]


def build_wave(
    cfg: Config,
    as_of: date,
    due: pd.DataFrame,
    debtors: pd.DataFrame,
    invoices: pd.DataFrame,
    *,
    link: Callable[[str, str], str],
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Render every contact of ``due`` (contact_key, debtor_id, channel, template, currency,
    send_at) into a wave frame (``WAVE_COLUMNS``) and each debtor's payment page (page key ->
    HTML).  ``link(key, token)`` turns a page key into the URL the messages carry."""
    directory = cfg.templates_dir()
    who = debtors.set_index("debtor_id").reindex(due["debtor_id"].unique())
    who["currency"] = due.drop_duplicates("debtor_id").set_index("debtor_id")["currency"]
    who["lang"] = (
        who["locale"].where(isin(who["locale"], LOCALES), DEFAULT_LOCALE).fillna(DEFAULT_LOCALE)
    )
    pairs = {(lg, c) for lg, c in zip(who["lang"], who["country"].fillna(""), strict=True)}
    babel = {p: babel_locale(*p) for p in pairs}
    who["babel"] = [
        babel[(lg, c)] for lg, c in zip(who["lang"], who["country"].fillna(""), strict=True)
    ]
    who["address"] = _address(who.reset_index()).to_numpy()
    lists, totals = _invoice_lists(invoices, who.reset_index())
    who["total_minor"] = totals.reindex(who.index).fillna(0).astype("int64")
    third_party = cfg.portfolio.collector == "third_party"
    licence = cfg.compliance.california_licence if cfg.compliance.collects_in_california else ""
    company = {"name": cfg.portfolio.name, "email": cfg.portfolio.contact_email}
    first_due_day = as_of + timedelta(days=PAGE_DAYS_TO_FIRST_INSTALMENT)

    pages: dict[str, str] = {}
    base: dict[str, dict] = {}
    loaded: dict[str, Any] = {}
    people = who.to_dict("index")  # plain dicts: a pandas row lookup per message cost seconds
    for debtor_id, d in people.items():  # one payment page per debtor: a document each
        token = secrets.token_urlsafe(16)
        key = f"pages/{token}/index.html"
        total = format_money(int(d["total_minor"]), d["currency"], d["babel"])
        ctx = {
            "lang": d["lang"],
            "dir": direction(d["lang"]),
            "company": company,
            "debtor": {"name": d["name"], "address": d["address"]},
            "invoices": lists.get(debtor_id, []),
            "total": total,
            "currency": d["currency"],
            "today": format_day(as_of, d["babel"]),
            "pay_url": link(key, token),
            "dispute_url": cfg.portal.dispute_url.format(reference=token),
            "checkout_url": cfg.portal.checkout_url.format(reference=token),
            "plans": _plans(
                int(d["total_minor"]),
                d["currency"],
                d["babel"],
                cfg.portal.plan_months,
                format_day(first_due_day, d["babel"]),
            ),
            "call_window": "",
            "unsubscribe_url": "",
            "disclosure": cfg.portfolio.disclosure.get(d["lang"], cfg.portfolio.disclosure["en"])
            if third_party
            else "",
            "licence": licence or "",
        }
        lang = _template_locale(directory, "page", "payment", d["lang"])
        pages[key] = render(directory, "page", "payment", lang, "html", ctx, loaded).body
        base[debtor_id] = {"ctx": ctx, "token": token, "page_key": key}

    hours = f"{cfg.compliance.hours_start}-{cfg.compliance.hours_end}"
    home = who["timezones"].fillna("UTC").str.split("|").str[0]
    due = due.assign(call_window=(hours + " " + home.reindex(due["debtor_id"])).to_numpy())
    out = []
    for r in due.itertuples(index=False):  # rendering is one document per message by nature
        b = base[r.debtor_id]
        d = people[r.debtor_id]
        lang = _template_locale(directory, r.channel, r.template, d["lang"])
        unsubscribe = cfg.channels.email.unsubscribe_url.format(
            contact=quote(r.contact_key, safe=""), token=b["token"]
        )
        ctx = {**b["ctx"], "unsubscribe_url": unsubscribe, "call_window": r.call_window}
        parts = {
            p: render(directory, r.channel, r.template, lang, p, ctx, loaded)
            for p in CHANNEL_PARTS[r.channel]
        }
        text = parts.get("txt")
        html = parts.get("html")
        out.append(
            (
                r.contact_key,
                r.debtor_id,
                r.channel,
                r.template,
                template_version(directory, r.channel, r.template, lang),
                lang,
                d["email"]
                if r.channel == "email"
                else d["phone"]
                if r.channel in ("sms", "call")
                else None,
                (text or html).subject if r.channel == "email" else None,
                html.body if html else None,
                text.body if text else None,
                b["page_key"],
                b["ctx"]["pay_url"],
                unsubscribe,
                d["name"],
                d["timezones"],
                d["address"],
                d["country"],
                d["currency"],
                b["ctx"]["total"],
                int(d["total_minor"]),
                len(b["ctx"]["invoices"]),
                r.send_at,
            )
        )
    wave = pd.DataFrame(out, columns=list(WAVE_COLUMNS))
    wave["recipient"] = wave["recipient"].replace("", None)
    return wave, pages


def _safe(key: str) -> str:
    """A contact key as a file name (keys hold ':'; object stores and shells dislike them)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def _put_all(items: Iterator[tuple[Any, bytes, str]]) -> int:
    """Many small objects at once: S3 latency, not bandwidth, is the cost of a put."""
    with ThreadPoolExecutor(PUBLISH_THREADS) as pool:
        done = list(pool.map(lambda it: lake.write_bytes(it[0], it[1], it[2]), items))
    return len(done)


def prepare_wave(
    cfg: Config,
    as_of: date,
    root: Any,
    engine: sa.Engine,
    *,
    plan_key: str,
    decisions_key: str,
    mode: Mode,
    portal_root: Any | None = None,
    shard: tuple[int, int] = (0, 1),
) -> dict:
    """Render the day's sendable contacts not yet sent into the day's wave file (``wave_key``);
    publish the payment pages (sending) or write every message and page as previews (not).

    ``shard=(k, n)`` renders only the debtors whose stable hash falls in shard ``k`` of ``n``
    into ``…/shard=k/wave.parquet``, so workers can render a large wave side by side;
    ``merge_shards`` then makes the day's wave file the senders read."""
    decisions = lake.read_parquet(root / decisions_key)
    index, count = shard
    if count > 1:
        decisions = decisions[shard_of(decisions["debtor_id"], count) == index]
    plan = lake.read_parquet(root / plan_key)[["contact_key", "template", "currency"]]
    debtors, invoices, done = _ledger_rows(engine, as_of, cfg.payments.ar_cash_lag_days)
    due = decisions.loc[
        isin(decisions["status"], SENDABLE) & _not_yet(decisions, done),
        ["contact_key", "debtor_id", "channel", "send_at"],
    ].merge(plan, on="contact_key")
    portal = portal_root if portal_root is not None else root / "portal"
    previews = lake.partition("previews", as_of)

    def link(key: str, token: str) -> str:
        return _page_link(cfg, portal, key, token) if mode.send else f"{previews}/{key}"

    wave, pages = build_wave(cfg, as_of, due, debtors, invoices, link=link)
    key = wave_key(as_of, mode.send, index if count > 1 else None)
    lake.write_parquet(root / key, wave)
    html = "text/html; charset=utf-8"
    if mode.send:
        published = _put_all((portal / k, body.encode(), html) for k, body in pages.items())
    else:
        files = [(root / previews / k, body.encode(), html) for k, body in pages.items()]
        for r in wave.itertuples(index=False):
            stem = f"{previews}/{r.channel}/{_safe(r.contact_key)}"
            if isinstance(r.html, str):
                files.append((root / f"{stem}.html", r.html.encode(), html))
            if isinstance(r.text, str):
                files.append((root / f"{stem}.txt", r.text.encode(), "text/plain; charset=utf-8"))
        published = _put_all(iter(files))
    return {
        "wave": key,
        "mode": mode.why,
        "sending": mode.send,
        "forced_reason": mode.forced_reason,
        "contacts": len(wave),
        "by_channel": {str(k): int(v) for k, v in wave["channel"].value_counts().items()},
        "pages": len(pages),
        "previews": None if mode.send else previews,
        "objects_written": published,
    }


def shard_of(debtors: pd.Series, count: int) -> pd.Series:
    """The shard of each debtor: stable across runs and machines, so a retried shard renders
    the same debtors, and a debtor's messages all land in one shard."""
    return (unit_hash(debtors, "wave-shard") * count).astype("int64")


def wave_key(as_of: date, sending: bool, shard: int | None = None) -> str:
    """Where a day's wave (or one shard of it) is written.  Only a sending run writes under
    ``waves/``, which the hourly ``dunning_waves`` sends from; a dry run, a backfill or a late
    run writes under ``previews/``, so a preview can never become what a live DAG sends."""
    base = (
        lake.partition("waves", as_of) if sending else lake.partition("previews", as_of) + "/wave"
    )
    return base + (f"/shard={shard}" if shard is not None else "") + "/wave.parquet"


def merge_shards(root: Any, as_of: date, results: list[dict]) -> dict:
    """The day's wave from its rendered shards: one file for the senders, counts summed."""
    key = wave_key(as_of, bool(results[0]["sending"]))
    if [r["wave"] for r in results] == [key]:  # one shard rendered straight into the day's file
        contacts = results[0]["contacts"]
    else:
        frames = [lake.read_parquet(root / r["wave"]) for r in results]
        wave = pd.concat(frames, ignore_index=True).sort_values("contact_key", ignore_index=True)
        lake.write_parquet(root / key, wave)
        contacts = len(wave)
    first = results[0]
    by_channel: dict[str, int] = {}
    for r in results:
        for channel, n in r["by_channel"].items():
            by_channel[channel] = by_channel.get(channel, 0) + n
    return {
        **{k: first[k] for k in ("mode", "sending", "forced_reason", "previews")},
        "wave": key,
        "contacts": contacts,
        "by_channel": by_channel,
        "pages": sum(r["pages"] for r in results),
        "objects_written": sum(r["objects_written"] for r in results),
        "shards": [r["wave"] for r in results],
    }


# --- sending, exactly once --------------------------------------------------------------------


def _insert_ignore(conn: sa.Connection) -> Any:
    """The claim: a message row inserted only if nobody holds its contact key yet, and nobody
    contacted its debtor on its channel that day (the ledger's partial unique index)."""
    return insert_ignore(conn, Message.__table__, None)


def _record(
    r: Any, as_of: date, status: str, claim: str, now: pd.Timestamp, forced: str | None
) -> dict:
    return {
        "contact_key": r.contact_key,
        "as_of": as_of,
        "debtor_id": r.debtor_id,
        "channel": r.channel,
        "template": r.template,
        "template_version": r.template_version,
        "locale": r.locale,
        "recipient": r.recipient,
        "status": status,
        "claim": claim,
        "claimed_at": now.to_pydatetime(),
        "page_key": r.page_key,
        "forced_reason": forced,
    }


def claim_rows(conn: sa.Connection, records: list[dict], claim: str) -> set[str]:
    """Insert the claims in one statement; the keys this claim now holds (a key somebody else
    already holds is simply not among them)."""
    if not records:
        return set()
    conn.execute(_insert_ignore(conn), records)
    m = Message.__table__.c
    mine = conn.execute(sa.select(m.contact_key).where(m.claim == claim)).scalars()
    return set(mine) & {r["contact_key"] for r in records}


def _finish(conn: sa.Connection, key: str, claim: str, values: dict) -> None:
    m = Message.__table__
    conn.execute(m.update().where(m.c.contact_key == key, m.c.claim == claim).values(**values))


def flag_unknown(engine: sa.Engine, as_of: date, channel: str, claim: str) -> int:
    """Claims a crashed attempt left ``sending``: the provider may or may not have the message,
    so it goes to review (``python -m dunning review``), never to a blind resend."""
    m = Message.__table__
    with engine.begin() as conn:
        return conn.execute(
            m.update()
            .where(
                m.c.as_of == as_of,
                m.c.channel == channel,
                m.c.status == "sending",
                m.c.claim != claim,
            )
            .values(status="unknown", error="outcome unknown: the sending process stopped")
        ).rowcount


class Transport(AbstractContextManager):
    """What ``send_each`` needs from a channel: ``ready()`` before a claim and ``send(row)``."""

    @abstractmethod
    def ready(self) -> None:
        """Make sure the provider can take a message now, so a dead provider costs a retry."""

    @abstractmethod
    def send(self, row: Any) -> Outcome:
        """Hand one wave row to the provider; raise ``ProviderError`` when it refuses."""


def send_each(
    engine: sa.Engine,
    rows: pd.DataFrame,
    transport: Transport,
    *,
    as_of: date,
    claim: str,
    forced: str | None,
    breaker: int = 20,
) -> Counter:
    """One provider call per message between a claim and a confirm.

    The confirm of message *i* and the claim of *i + 1* share one transaction, so the ledger
    sees one commit per message; a crash leaves at most one row ``sending``.  A transient
    provider error releases the current claim (nothing left our hands) and re-raises, so the
    task's retry resumes where this stopped.  ``breaker`` permanent refusals in a row release
    all of them and raise ``ChannelOutage``: one bad address fails alone, a refusing relay stops
    the channel with the wave intact.
    """
    counts: Counter = Counter()
    m = Message.__table__
    pending: tuple[str, dict] | None = None
    refused: list[str] = []  # permanent refusals since the last message that went out
    with engine.connect() as conn, transport:
        try:
            for r in rows.itertuples(index=False):
                transport.ready()
                with conn.begin():
                    if pending:
                        _finish(conn, pending[0], claim, pending[1])
                        pending = None
                    record = _record(r, as_of, "sending", claim, clock.now(), forced)
                    if not conn.execute(_insert_ignore(conn), [record]).rowcount:
                        counts["skipped"] += 1
                        continue
                try:
                    outcome = transport.send(r)
                except ProviderError as exc:
                    if not exc.permanent:
                        mine = (m.c.contact_key == r.contact_key) & (m.c.claim == claim)
                        with conn.begin():
                            if exc.uncertain:
                                conn.execute(
                                    m.update()
                                    .where(mine)
                                    .values(status="unknown", error=f"outcome unknown: {exc}")
                                )
                            else:
                                conn.execute(m.delete().where(mine))
                        raise
                    pending = (r.contact_key, {"status": "failed", "error": str(exc)[:2000]})
                    counts["failed"] += 1
                    refused.append(r.contact_key)
                    if len(refused) >= breaker:
                        with conn.begin():
                            _finish(conn, pending[0], claim, pending[1])
                            pending = None
                            mine = m.c.contact_key.in_(refused) & (m.c.claim == claim)
                            conn.execute(m.delete().where(mine & (m.c.status == "failed")))
                        raise ChannelOutage(
                            f"the provider refused {len(refused)} messages in a row after "
                            f"{counts['sent']} went out: stopped, the rest of the wave stays "
                            "for a later run"
                        ) from None  # the provider's text may name the recipient: not logged
                    continue
                refused.clear()
                pending = (
                    r.contact_key,
                    {
                        "status": "sent",
                        "sent_at": clock.utcnow(),
                        "provider": outcome.provider,
                        "provider_id": outcome.provider_id,
                        "delivery_status": outcome.status,
                    },
                )
                counts["sent"] += 1
        finally:
            if pending:
                with conn.begin():
                    _finish(conn, pending[0], claim, pending[1])
    return counts


# --- the channels ------------------------------------------------------------------------------


class EmailTransport(Transport):
    """A wave row -> a MIME message -> the SMTP session."""

    def __init__(self, cfg: Config, settings: Any) -> None:
        from dunning.channels.email import SmtpSender

        self.cfg = cfg.channels.email
        self.sender = SmtpSender(settings, envelope_from=self.cfg.bounce_address)

    def __enter__(self) -> EmailTransport:
        self.sender.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sender.close()

    def ready(self) -> None:
        self.sender.ready()

    def send(self, row: Any) -> Outcome:
        from dunning.channels.email import build_message

        message = build_message(
            contact_key=row.contact_key,
            sender=self.cfg.sender,
            to_address=row.recipient,
            to_name=row.name if isinstance(row.name, str) else None,
            subject=row.subject,
            text=row.text,
            html=row.html,
            locale=row.locale,
            unsubscribe_url=row.unsubscribe_url,
            unsubscribe_mailto=self.cfg.unsubscribe_mailto,
            reply_to=self.cfg.reply_to,
            at=clock.now(),
        )
        return self.sender.send(message, row.recipient)


class SmsTransport(Transport):
    """A wave row -> one REST call to the SMS provider (one HTTP connection for the wave)."""

    def __init__(self, settings: Any) -> None:
        from dunning.channels.sms import SmsClient

        self.client = SmsClient(settings)

    def __enter__(self) -> SmsTransport:
        self.client.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def ready(self) -> None:
        return None

    def send(self, row: Any) -> Outcome:
        return self.client.send(row.recipient, row.text, row.contact_key)


def _problems(cfg: Config, rows: pd.DataFrame) -> pd.Series:
    """Messages that cannot go out as rendered: no address on the channel, an SMS over its
    segment cap (cut, it would lose the STOP line), an address the channel cannot use."""
    problem = pd.Series(None, index=rows.index, dtype=object)
    channel = rows["channel"]
    needs_address = isin(channel, ("email", "sms", "call"))
    problem[needs_address & rows["recipient"].isna()] = "NO_ADDRESS: no address on this channel"
    sms = (channel == "sms") & rows["recipient"].notna()
    if sms.any():
        from dunning.channels.sms import segments

        caps = rows.loc[sms, "template"].map(cfg.channels.sms.max_segments_by_template)
        caps = caps.fillna(cfg.channels.sms.max_segments).astype(int)
        count = rows.loc[sms, "text"].map(segments)
        over = count > caps
        problem[over[over].index] = [
            f"SMS_TOO_LONG: {n} segments, the cap is {c}"
            for n, c in zip(count[over], caps[over], strict=True)
        ]
    return problem


def _write_batch(rows: pd.DataFrame, channel: str, outbox: Any, as_of: date, tag: str) -> str:
    """Letters: one print-ready PDF and its vendor manifest; calls: the dialer's queue file."""
    folder = lake.partition(f"{channel}s", as_of)
    if channel == "letter":
        from dunning.channels.letters import letters_pdf, print_manifest

        pdf, pages = letters_pdf(list(rows["html"]))
        key = f"{folder}/letters-{tag}.pdf"
        lake.write_bytes(outbox / f"{folder}/letters-{tag}.csv", print_manifest(rows, pages))
        lake.write_bytes(outbox / key, pdf, "application/pdf")
        return key
    from dunning.channels.calls import dialer_file

    queue = rows.assign(phone=rows["recipient"], script=rows["text"])
    key = f"{folder}/queue-{tag}.csv"
    lake.write_bytes(outbox / key, dialer_file(queue), "text/csv; charset=utf-8")
    return key


def _with_call_windows(
    cfg: Config, rows: pd.DataFrame, now: pd.Timestamp, windows: pd.DataFrame
) -> pd.DataFrame:
    """Each call's window today: from now (or its scheduled time) while it stays inside the
    hours in every zone and outside the debtor's designated times; NaT when nothing is left."""
    from dunning.channels.calls import call_windows

    rows = rows.reset_index(drop=True)
    start = pd.to_datetime(rows["send_at"], utc=True).fillna(now).clip(lower=now)
    positions = pd.DataFrame({"debtor_id": rows["debtor_id"].to_numpy()}).reset_index(names="row")
    per_row = positions.merge(windows, on="debtor_id").drop(columns="debtor_id")
    span = call_windows(
        start,
        rows["timezones"].fillna("UTC"),
        per_row,
        hours_start=cfg.compliance.hours_start,
        hours_end=cfg.compliance.hours_end,
    )
    return rows.assign(
        window_start=span["window_start"].to_numpy(), window_end=span["window_end"].to_numpy()
    )


def send_wave(
    cfg: Config,
    as_of: date,
    root: Any,
    engine: sa.Engine,
    wave_key: str,
    channel: str,
    *,
    mode: Mode,
    claim: str,
    transport: Callable[[], Transport] | None = None,
    outbox: Any | None = None,
) -> dict:
    """Send one channel's part of the wave (``outbox``: where letter and call files go, by
    default the lake's ``outbox/``).  Before anything goes out the gate decides again at
    the real clock: a contact now outside its hours waits for a later wave; one blocked for any
    other reason (an opt-out since the morning) is recorded ``suppressed`` with the reasons."""
    result: dict[str, Any] = {"channel": channel, "mode": mode.why}
    if not mode.send:
        return {**result, "sent": 0, "skipped": f"nothing sent ({mode.why})"}
    now = clock.now()
    outbox = outbox if outbox is not None else root / "outbox"
    wave = lake.read_parquet(root / wave_key)
    rows = wave[wave["channel"] == channel]
    result["unknown_flagged"] = flag_unknown(engine, as_of, channel, claim) + flag_stuck(engine)
    with engine.connect() as conn:
        done = _already(conn, as_of)
    rows = rows[_not_yet(rows, done)].reset_index(drop=True)
    counts: Counter = Counter()
    if len(rows):
        decided, _, windows = compliance.decide(
            engine, cfg, as_of, rows[["debtor_id", "channel"]], now, in_batch=False
        )
        allowed = decided["allowed"].to_numpy()
        waiting = ~allowed & decided["next_allowed_at"].notna().to_numpy()
        problems = _problems(cfg, rows)
        stopped = [
            {**_record(r, as_of, status, claim, now, mode.forced_reason), "error": error}
            for r, status, error in _stopped(rows, allowed, waiting, decided["reasons"], problems)
        ]
        with engine.begin() as conn:
            claim_rows(conn, stopped, claim)
        counts.update(s["status"] for s in stopped)
        counts["waiting"] = int(waiting.sum())
        go = rows[allowed & problems.isna().to_numpy()]
        if channel in ("email", "sms"):
            assert transport is not None, f"{channel} needs a transport"
            counts += send_each(
                engine,
                go,
                transport(),
                as_of=as_of,
                claim=claim,
                forced=mode.forced_reason,
                breaker=cfg.channels.outage_after_refusals,
            )
        elif len(go):
            batch = _send_batch(cfg, as_of, engine, go, channel, mode, claim, now, windows, outbox)
            counts.update(batch.pop("counts"))
            result.update(batch)
    return {**result, **{k: int(v) for k, v in counts.items()}, "sent": int(counts["sent"])}


def _send_batch(
    cfg: Config,
    as_of: date,
    engine: sa.Engine,
    go: pd.DataFrame,
    channel: str,
    mode: Mode,
    claim: str,
    now: pd.Timestamp,
    windows: pd.DataFrame,
    outbox: Any,
) -> dict:
    """Letters and calls go out as one file per batch: claim every row, write the file, confirm
    them all (a crash in between leaves the batch ``sending``: unknown, for review)."""
    counts: Counter = Counter()
    if channel == "call":  # a call with no window left today waits for tomorrow's queue
        go = _with_call_windows(cfg, go, now, windows)
        counts["waiting"] += int(go["window_start"].isna().sum())
        go = go[go["window_start"].notna()]
    records = [
        _record(r, as_of, "sending", claim, now, mode.forced_reason) for r in go.itertuples()
    ]
    with engine.begin() as conn:
        mine = claim_rows(conn, records, claim)
    go = go[isin(go["contact_key"], mine)]
    if go.empty:  # another run holds every claim (or no call has a window left)
        return {"counts": counts}
    tag = f"{now:%Y%m%dT%H%M%S}-{claim.rsplit('|', 1)[-1][:8]}"
    key = _write_batch(go, channel, outbox, as_of, tag)
    m = Message.__table__
    with engine.begin() as conn:
        conn.execute(
            m.update()
            .where(m.c.claim == claim, m.c.status == "sending")
            .values(
                status="sent",
                sent_at=now.to_pydatetime(),
                provider="print" if channel == "letter" else "dialer",
                provider_id=key,
                delivery_status="queued",
            )
        )
    counts["sent"] += len(go)
    return {"counts": counts, "file": key}


def _stopped(
    rows: pd.DataFrame,
    allowed: np.ndarray,
    waiting: np.ndarray,
    reasons: pd.Series,
    problems: pd.Series,
) -> Iterator[tuple[Any, str, str]]:
    """The rows that end here, with their status and why: blocked at the re-check
    (``suppressed``) or unsendable as rendered (``failed``)."""
    blocked = ~allowed & ~waiting
    for r, b, a, why, problem in zip(
        rows.itertuples(index=False), blocked, allowed, reasons, problems, strict=True
    ):
        if b:
            yield r, "suppressed", f"blocked at send: {why}"
        elif a and isinstance(problem, str):
            yield r, "failed", problem


def new_claim(run_id: str, channel: str) -> str:
    """Whose claim a row is: the run, the channel and this attempt (a retry is a new attempt)."""
    return f"{run_id}|{channel}|{uuid.uuid4().hex[:12]}"


def day_counts(engine: sa.Engine, as_of: date) -> dict:
    """The day's messages by status and channel, from the ledger (so a re-run's summary counts
    what earlier attempts sent too)."""
    m = Message.__table__.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(m.status, m.channel, sa.func.count())
            .where(m.as_of == as_of)
            .group_by(m.status, m.channel)
        ).all()
    out: dict[str, dict[str, int]] = {}
    for status, channel, n in rows:
        out.setdefault(status, {})[channel] = int(n)
    return out


# --- review of unknown outcomes ----------------------------------------------------------------


# A claim is ``sending`` only for the seconds of its own provider call: one this old is a send
# whose process died, whatever date or channel it was for.
STUCK_AFTER = timedelta(hours=1)


def flag_stuck(engine: sa.Engine) -> int:
    """Claims a dead process left ``sending`` on any date: to review, so none waits for a later
    send of its own date and channel (which may never come)."""
    m = Message.__table__
    with engine.begin() as conn:
        return conn.execute(
            m.update()
            .where(m.c.status == "sending", m.c.claimed_at < clock.utcnow() - STUCK_AFTER)
            .values(status="unknown", error="outcome unknown: the sending process stopped")
        ).rowcount


def unknown_messages(engine: sa.Engine, as_of: date | None = None) -> pd.DataFrame:
    """Sends whose outcome a crash lost: what the operator checks with the provider."""
    flag_stuck(engine)
    m = Message.__table__.c
    query = sa.select(
        m.contact_key, m.as_of, m.channel, m.claimed_at, m.provider_id, m.error
    ).where(m.status == "unknown")
    if as_of is not None:
        query = query.where(m.as_of == as_of)
    with engine.connect() as conn:
        return pd.read_sql(query.order_by(m.as_of, m.contact_key), conn)


def resolve_unknown(
    engine: sa.Engine, contact_key: str, *, delivered: bool, note: str, by: str
) -> bool:
    """Close a review, keeping who said what and when: delivered -> ``sent``; not delivered ->
    the row is kept as ``not_delivered`` under ``<key>#review<n>`` and the key is free again, so
    the day's next wave sends the contact.  Only ``unknown`` rows can be resolved."""
    m = Message.__table__
    where = (m.c.contact_key == contact_key) & (m.c.status == "unknown")
    review = {"error": f"review: {note}", "reviewed_by": by, "reviewed_at": clock.utcnow()}
    with engine.begin() as conn:
        if delivered:
            return bool(
                conn.execute(m.update().where(where).values(status="sent", **review)).rowcount
            )
        earlier = conn.execute(
            sa.select(sa.func.count()).where(m.c.contact_key.like(f"{contact_key}#review%"))
        ).scalar_one()
        archived = f"{contact_key}#review{earlier + 1}"
        return bool(
            conn.execute(
                m.update()
                .where(where)
                .values(contact_key=archived, status="not_delivered", **review)
            ).rowcount
        )
