"""The channel feedback loop: what comes back from the channels updates the ledger.

Bounces (RFC 3464 delivery status notifications, and the common non-standard bounce that quotes
the original headers inline), SMS provider events (delivery receipts, STOP/START replies) and
email events (one-click unsubscribes, complaints, delivery and open receipts) are read, resolved
to debtors through the ledger and stored:

* as ``ChannelEvent`` rows (source ``bounce`` / ``sms`` / ``email``) for what changes whether we
  may contact someone: a hard bounce (``bounced``), an SMS STOP (``sms_stop``) or START
  (``opt_in``), an unsubscribe or complaint (``unsubscribed``).  The unique (source, event_id)
  makes every load idempotent: reading the same mailbox or file twice adds nothing.
* as ``Message.delivery_status`` / ``delivery_at`` for delivery outcomes (delivered, undelivered,
  failed, bounced, deferred, opened); the newest outcome per message wins.

An event dated after the business date is left for a later run, so a backfill never sees the
future.  Items that match no message or debtor (a STOP from an unknown number, a bounce of mail
we did not send) are counted as ``unmatched``, not errors.  A line or a bounce that cannot be
parsed becomes a quarantine issue with its file, line and field; the rest still load.

``channel_opt_outs`` hands the stored events to the compliance gate in its own vocabulary.
Core module: no Airflow import (and no import of ``dunning.compliance``, which imports this).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, date, datetime
from email.message import Message
from email.parser import HeaderParser
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from dunning import quality
from dunning.channels.email import CONTACT_HEADER
from dunning.ledger import ChannelEvent, Debtor, insert_ignore
from dunning.ledger import Message as SentMessage

log = logging.getLogger(__name__)

BAD_DSN = "BAD_DSN"  # quarantine reason: a bounce we recognise but cannot read

BOUNCE_COLUMNS = (
    "event_id",
    "contact_key",
    "message_id",
    "recipient",
    "kind",
    "status",
    "diagnostic",
    "at",
    "file",
)
SMS_COLUMNS = ("type", "event_id", "sid", "status", "phone", "event", "at", "file", "line")
EMAIL_COLUMNS = ("type", "event_id", "contact_key", "message_id", "event", "at", "file", "line")

# CTIA opt-out / opt-in keywords, compared after ``_keyword`` normalisation.
STOP_KEYWORDS = frozenset(
    {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "arret", "arrêt"}
    | {"إيقاف", "ايقاف", "الغاء", "إلغاء"}
)
START_KEYWORDS = frozenset({"start", "unstop", "yes"})
SMS_STATUSES = frozenset({"delivered", "undelivered", "failed", "sent", "queued"})
SMS_DELIVERY = frozenset({"delivered", "undelivered", "failed"})  # outcomes worth recording
EMAIL_EVENT_TYPES = {
    "unsubscribe": "unsubscribed",
    "complaint": "unsubscribed",
    "delivered": None,
    "opened": None,
}
# Two outcomes stamped with the same instant: the more telling one wins.
DELIVERY_RANK = {
    "deferred": 0,
    "delivered": 1,
    "undelivered": 2,
    "failed": 3,
    "bounced": 4,
    "opened": 5,
}
# ChannelEvent.event -> the compliance engine's OPT_OUT_EVENTS vocabulary.
COMPLIANCE_EVENTS = {
    "bounced": "opt_out",
    "unsubscribed": "unsubscribed",
    "sms_stop": "sms_stop",
    "opt_in": "opt_in",
}
FEEDBACK_EVENTS = tuple(COMPLIANCE_EVENTS)

DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
ORIGINAL_TYPES = frozenset({"message/rfc822", "message/global"})
ORIGINAL_HEADER_TYPES = frozenset({"text/rfc822-headers", "message/global-headers"})
BOUNCE_SENDERS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailer_daemon"})
BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status|fail|has failed|notification|problem)|mail delivery|"
    r"returned mail|failure notice|delivery failure|could not send message|delayed mail|"
    r"non[- ]?delivery|mail system error|returned to sender",
    re.IGNORECASE,
)
STATUS_CODE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
ENHANCED_IN_TEXT = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
SMTP_IN_TEXT = re.compile(r"(?<![\d.])([45][0-5]\d)(?=[ -]|$)", re.MULTILINE)
PERMANENT_WORDS = re.compile(
    r"permanent|user unknown|unknown user|does not exist|no such (user|mailbox|recipient)|"
    r"mailbox unavailable|address rejected|recipient rejected|invalid recipient",
    re.IGNORECASE,
)
TEMPORARY_WORDS = re.compile(
    r"delay|temporar|will (continue|be) retr|still (being )?retr|not yet been delivered|"
    r"will retry|mailbox full|over quota",
    re.IGNORECASE,
)
# Where the quoted original starts in a non-standard bounce: its first header line.
ORIGINAL_START = re.compile(
    r"^(Return-Path|Received|From|To|Subject|Date|Message-I[Dd]|X-Dunning-Contact|"
    r"MIME-Version|Content-Type):",
    re.MULTILINE | re.IGNORECASE,
)
INLINE_CONTACT = re.compile(r"^X-Dunning-Contact:[ \t]*(\S[^\r\n]*?)[ \t]*$", re.M | re.I)
INLINE_MESSAGE_ID = re.compile(r"^Message-ID:[ \t]*(<[^>\s]+>)", re.M | re.I)
INLINE_TO = re.compile(r"^To:[ \t]*([^\r\n]+)$", re.M | re.I)
INLINE_RECIPIENT = re.compile(
    r"^\s*(?:Final-Recipient:\s*rfc822;\s*<?|<)([^<>\s@]+@[^<>\s;]+?)>?:?\s*$", re.M | re.I
)
TIMESTAMP_WITH_OFFSET = r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?\s*(Z|[+-]\d\d:?\d\d)$"
MAX_DETAIL = 500
LOOKUP_CHUNK = 5_000


# --- reading: bounces ---------------------------------------------------------------------------


def read_bounces(maildir: Path) -> tuple[pd.DataFrame, list[dict]]:
    """Every hard and soft bounce in a folder of ``.eml`` files, one row per failed recipient.

    Columns: event_id (the bounce's own Message-ID, else ``sha256:`` of the file), contact_key
    (the returned original's X-Dunning-Contact, may be None), message_id (the original's
    Message-ID), recipient, kind (``hard`` | ``soft``), status (``5.1.1``), diagnostic, at (the
    bounce's Date, UTC), file.  Mail that is not a bounce (auto-replies, out-of-office) is
    skipped; a bounce that cannot be read is returned as a quarantine issue (file, row -- 0 for
    the whole file, else the recipient block --, field, reason, message).
    """
    maildir = Path(maildir)
    rows: list[dict] = []
    issues: list[dict] = []
    if not maildir.is_dir():
        return _bounce_frame(rows), issues
    for path in sorted(maildir.glob("*.eml")):
        try:
            raw = path.read_bytes()
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            found, problems = _parse_bounce(msg, raw)
        except Exception as exc:  # the email package is lenient; anything left is a broken file
            found, problems = [], [(0, "file", f"unreadable message ({type(exc).__name__})")]
        for row in found:
            rows.append({**row, "file": str(path)})
        for row_no, field, message in problems:
            issues.append(_issue("bounce", path, row_no, field, BAD_DSN, message))
    if issues:
        log.warning("bounces: %d unreadable bounce(s) quarantined", len(issues))
    return _bounce_frame(rows), issues


def _bounce_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[c for c in BOUNCE_COLUMNS])
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    return frame


def _parse_bounce(msg: Message, raw: bytes) -> tuple[list[dict], list[tuple[int, str, str]]]:
    """(rows, problems) of one message; both empty when it is not a bounce at all."""
    report = _find_part(msg, DSN_TYPES)
    is_report = (
        msg.get_content_type() == "multipart/report"
        and str(msg.get_param("report-type") or "").lower() == "delivery-status"
    )
    if report is None and not is_report and not _looks_like_bounce(msg):
        return [], []
    own_id = _header(msg, "Message-ID")
    event_id = own_id.strip() if own_id else "sha256:" + hashlib.sha256(raw).hexdigest()
    contact_key, message_id, original_to = _returned_original(msg)
    if report is None and is_report:
        return [], [(0, "delivery-status", "a delivery report without a delivery-status part")]
    if report is not None:
        found, problems, arrival = _dsn_recipients(report)
    else:
        found, problems, arrival = _inline_recipients(msg, original_to)
        if contact_key is None and message_id is None:
            contact_key, message_id = _inline_original(_text(msg))
    if not found:
        return [], problems
    at = _utc_date_header(_header(msg, "Date")) or _utc_date_header(arrival)
    if at is None:
        return [], [*problems, (0, "Date", "the bounce has no readable Date")]
    rows = [
        {
            "event_id": event_id if len(found) == 1 else f"{event_id}#{r['recipient'] or i}",
            "contact_key": contact_key,
            "message_id": message_id,
            **r,
            "at": at,
        }
        for i, r in enumerate(found, start=1)
    ]
    return rows, problems


def _looks_like_bounce(msg: Message) -> bool:
    """A non-standard bounce: from the mailer daemon, or with a bounce's subject line."""
    sender = parseaddr(_header(msg, "From") or "")[1].lower()
    if sender.split("@", 1)[0] in BOUNCE_SENDERS:
        return True
    return bool(BOUNCE_SUBJECT.search(_header(msg, "Subject") or ""))


def _header(msg: Message, name: str) -> str | None:
    try:
        value = msg.get(name)
        text = None if value is None else str(value).strip()
    except Exception:  # a header the modern policy cannot parse: not usable
        text = None
    return text or None


def _find_part(msg: Message, types: Iterable[str]) -> Message | None:
    wanted = set(types)
    for part in msg.walk():
        if part.get_content_type() in wanted:
            return part
    return None


def _returned_original(msg: Message) -> tuple[str | None, str | None, str | None]:
    """(X-Dunning-Contact, Message-ID, To) of the returned original, when it is attached."""
    part = _find_part(msg, ORIGINAL_TYPES | ORIGINAL_HEADER_TYPES)
    if part is None:
        return None, None, None
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        original = payload[0]
    else:
        text = part.get_payload(decode=True)
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(payload)
        original = HeaderParser(policy=email.policy.default).parsestr(text.lstrip())
    return (
        _header(original, CONTACT_HEADER),
        _header(original, "Message-ID"),
        _header(original, "To"),
    )


def _blocks(part: Message) -> list[Message]:
    """The field groups of a delivery-status part (the parser splits message/delivery-status;
    the global variant and odd encodings arrive as text)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return list(payload)
    data = part.get_payload(decode=True)
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload)
    parser = HeaderParser(policy=email.policy.default)
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    return [parser.parsestr(chunk + "\n") for chunk in chunks if chunk.strip()]


def _dsn_recipients(report: Message) -> tuple[list[dict], list[tuple[int, str, str]], str | None]:
    found: list[dict] = []
    problems: list[tuple[int, str, str]] = []
    blocks = _blocks(report)
    arrival = next((_header(b, "Arrival-Date") for b in blocks if _header(b, "Arrival-Date")), None)
    recipients = [b for b in blocks if _header(b, "Final-Recipient") or _header(b, "Action")]
    if not recipients:
        return (
            [],
            [(0, "delivery-status", "no per-recipient fields (Final-Recipient, Action)")],
            arrival,
        )
    for number, block in enumerate(recipients, start=1):
        action = (_header(block, "Action") or "").lower()
        status = (_header(block, "Status") or "").split(" ", 1)[0].strip()
        recipient = _address(
            _header(block, "Final-Recipient") or _header(block, "Original-Recipient")
        )
        if action in ("delivered", "relayed", "expanded"):
            continue  # a success notice: nothing to record
        if action not in ("failed", "delayed"):
            problems.append((number, "Action", f"unknown or missing Action {action!r}"))
            continue
        if not STATUS_CODE.match(status):
            problems.append((number, "Status", f"missing or malformed Status {status!r}"))
            continue
        if action == "failed" and status.startswith("5"):
            kind = "hard"
        elif action == "delayed" or status.startswith("4"):
            kind = "soft"
        else:
            problems.append((number, "Status", f"Action failed with a success Status {status!r}"))
            continue
        diagnostic = _header(block, "Diagnostic-Code")
        found.append(
            {
                "recipient": recipient,
                "kind": kind,
                "status": status,
                "diagnostic": diagnostic[:MAX_DETAIL] if diagnostic else None,
            }
        )
    return found, problems, arrival


def _inline_recipients(
    msg: Message, original_to: str | None
) -> tuple[list[dict], list[tuple[int, str, str]], str | None]:
    """The one failed recipient of a non-standard bounce, read from its text."""
    text = _text(msg)
    start = ORIGINAL_START.search(text)
    notice = text[: start.start()] if start else text
    found = ENHANCED_IN_TEXT.search(notice)
    smtp = SMTP_IN_TEXT.search(notice)
    if found:
        status = found.group(1)
    elif smtp:
        status = f"{smtp.group(1)[0]}.0.0"
    elif PERMANENT_WORDS.search(notice):
        status = "5.0.0"
    elif TEMPORARY_WORDS.search(notice):
        status = "4.0.0"
    else:
        return [], [(0, "Status", "a bounce without a delivery status or SMTP code")], None
    if status.startswith("2"):
        return [], [], None
    hit = found or smtp
    diagnostic = None
    if hit:
        line_start = notice.rfind("\n", 0, hit.start()) + 1
        line_end = notice.find("\n", hit.end())
        diagnostic = notice[line_start : line_end if line_end >= 0 else None].strip()[:MAX_DETAIL]
    address = INLINE_RECIPIENT.search(notice)
    recipient = address.group(1) if address else None
    if recipient is None:
        to = INLINE_TO.search(text)
        recipient = _address(original_to or (to.group(1) if to else None))
    kind = "hard" if status.startswith("5") else "soft"
    return (
        [{"recipient": recipient, "kind": kind, "status": status, "diagnostic": diagnostic}],
        [],
        None,
    )


def _inline_original(text: str) -> tuple[str | None, str | None]:
    contact = INLINE_CONTACT.search(text)
    message_id = INLINE_MESSAGE_ID.search(text)
    return (
        contact.group(1) if contact else None,
        message_id.group(1) if message_id else None,
    )


def _text(msg: Message) -> str:
    """Every text/plain part of the bounce itself (not of an attached original), joined."""
    parts: list[str] = []
    stack = [msg]
    while stack:
        part = stack.pop(0)
        ctype = part.get_content_type()
        if part.is_multipart():
            if ctype in ORIGINAL_TYPES:
                continue
            stack[:0] = list(part.get_payload())
        elif ctype == "text/plain":
            data = part.get_payload(decode=True)
            charset = part.get_content_charset() or "utf-8"
            try:
                parts.append(data.decode(charset, "replace") if data else "")
            except LookupError:
                parts.append(data.decode("utf-8", "replace"))
    return "\n".join(parts)


def _address(value: str | None) -> str | None:
    """``rfc822; x@y`` (a DSN recipient field) or ``Name <x@y>`` -> ``x@y``."""
    if not value:
        return None
    text = value.split(";", 1)[1] if ";" in value else value
    address = parseaddr(text.strip())[1] or text.strip()
    return address or None


def _utc_date_header(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # "-0000": zone unknown, RFC 5322 says treat as UTC
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# --- reading: JSON Lines events -----------------------------------------------------------------


def read_sms_events(path: Path) -> tuple[pd.DataFrame, list[dict]]:
    """The SMS provider's events: delivery receipts and replies that are STOP/START keywords.

    Columns: type (``status`` | ``inbound``), event_id (the provider's sid), sid, status (of a
    receipt), phone (the number it went to or came from, digits with ``+``), event (``sms_stop``
    | ``opt_in`` for a keyword reply, else None), at (UTC), file, line.  A reply that is not a
    keyword is not an event and is left out.  Bad lines are quarantine issues; the rest load.
    """
    path = Path(path)
    frame, issues = _read_jsonl(path, "sms", ("type", "sid", "status", "to", "from", "body", "at"))
    checks = quality._Issues(frame)
    kind = _text_column(frame, "type").str.strip().str.lower()
    checks.add(
        ~_is(kind, ["status", "inbound"]),
        "type",
        quality.BAD_VALUE,
        "type must be status or inbound",
    )
    sid = _text_column(frame, "sid").str.strip()
    checks.add(_blank(sid), "sid", quality.MISSING_FIELD, "sid is required")
    at = _timestamps(frame, checks)
    status = _text_column(frame, "status").str.strip().str.lower()
    is_status = _is(kind, ["status"])
    checks.add(
        is_status & ~_is(status, SMS_STATUSES),
        "status",
        quality.BAD_VALUE,
        "status must be one of " + ", ".join(sorted(SMS_STATUSES)),
    )
    sender = _text_column(frame, "from")
    is_inbound = _is(kind, ["inbound"])
    checks.add(
        is_inbound & _blank(sender.str.strip()),
        "from",
        quality.MISSING_FIELD,
        "an inbound message needs from",
    )
    phone = _phone(sender.where(is_inbound, _text_column(frame, "to")))
    word = _keyword(_text_column(frame, "body"))
    event = pd.Series(None, index=frame.index, dtype=object)
    event[is_inbound & _is(word, STOP_KEYWORDS)] = "sms_stop"
    event[is_inbound & _is(word, START_KEYWORDS)] = "opt_in"
    out = pd.DataFrame(
        {
            "type": kind,
            "event_id": sid,
            "sid": sid,
            "status": status.where(is_status),
            "phone": phone,
            "event": event,
            "at": at,
            "file": str(path),
            "line": frame["_line"],
        },
        index=frame.index,
    )
    out = out.drop(index=checks.bad_index())
    out = out[(out["type"] == "status") | out["event"].notna()].reset_index(drop=True)
    out["event"] = _objects(out["event"])
    return out[list(SMS_COLUMNS)], issues + _issue_records(checks, "sms", path)


def read_email_events(path: Path) -> tuple[pd.DataFrame, list[dict]]:
    """Email events: unsubscribes and complaints (event ``unsubscribed``, by contact_key) and
    delivery/open receipts (by message_id).

    Columns: type, event_id (the event's id), contact_key, message_id, event, at (UTC), file,
    line.  Bad lines are quarantine issues; the rest load.
    """
    path = Path(path)
    frame, issues = _read_jsonl(path, "email", ("type", "id", "contact_key", "message_id", "at"))
    checks = quality._Issues(frame)
    kind = _text_column(frame, "type").str.strip().str.lower()
    checks.add(
        ~_is(kind, EMAIL_EVENT_TYPES),
        "type",
        quality.BAD_VALUE,
        "type must be one of " + ", ".join(EMAIL_EVENT_TYPES),
    )
    event_id = _text_column(frame, "id").str.strip()
    checks.add(_blank(event_id), "id", quality.MISSING_FIELD, "id is required")
    at = _timestamps(frame, checks)
    contact = _text_column(frame, "contact_key").str.strip()
    opt_out = _is(kind, ["unsubscribe", "complaint"])
    checks.add(
        opt_out & _blank(contact),
        "contact_key",
        quality.MISSING_FIELD,
        "an unsubscribe or complaint needs contact_key",
    )
    message_id = _text_column(frame, "message_id").str.strip()
    checks.add(
        _is(kind, ["delivered", "opened"]) & _blank(message_id),
        "message_id",
        quality.MISSING_FIELD,
        "a delivery or open receipt needs message_id",
    )
    out = pd.DataFrame(
        {
            "type": kind,
            "event_id": event_id,
            "contact_key": contact.where(opt_out),
            "message_id": message_id.where(~opt_out),
            "event": kind.map(EMAIL_EVENT_TYPES).astype(object),
            "at": at,
            "file": str(path),
            "line": frame["_line"],
        },
        index=frame.index,
    )
    out = out.drop(index=checks.bad_index()).reset_index(drop=True)
    out["event"] = _objects(out["event"])
    return out[list(EMAIL_COLUMNS)], issues + _issue_records(checks, "email", path)


def _read_jsonl(
    path: Path, source: str, fields: tuple[str, ...]
) -> tuple[pd.DataFrame, list[dict]]:
    """One row per JSON object line (``_line`` 1-based; ``source_file``/``source_row`` for
    ``quality._Issues``); a line that is not a JSON object is an issue.  Blank lines are skipped."""
    records: list[dict] = []
    issues: list[dict] = []
    text = path.read_bytes().decode("utf-8-sig", "replace") if path.is_file() else ""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            issues.append(
                _issue(source, path, number, "line", quality.MALFORMED_LINE, f"not JSON: {exc.msg}")
            )
            continue
        if not isinstance(item, dict):
            issues.append(
                _issue(source, path, number, "line", quality.MALFORMED_LINE, "not a JSON object")
            )
            continue
        records.append({**{f: _scalar(item.get(f)) for f in fields}, "_line": number})
    frame = pd.DataFrame(records, columns=[*fields, "_line"])
    frame["_line"] = frame["_line"].astype("int64")
    frame["source_file"] = str(path)
    frame["source_row"] = frame["_line"]
    frame["source"] = source
    return frame, issues


def _scalar(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _text_column(frame: pd.DataFrame, name: str) -> pd.Series:
    return (
        frame[name].astype("string")
        if name in frame
        else pd.Series(pd.NA, index=frame.index, dtype="string")
    )


def _objects(values: pd.Series) -> pd.Series:
    """Python objects with None for missing (not NaN): what callers compare and bind."""
    return values.astype(object).where(values.notna(), None)


def _is(values: pd.Series, allowed: Iterable[str]) -> pd.Series:
    """Plain bool (missing = False), so it can index and be negated."""
    return values.isin(list(allowed)).fillna(False).astype(bool)


def _blank(values: pd.Series) -> pd.Series:
    return (values.isna() | (values == "")).fillna(True).astype(bool)


def _timestamps(frame: pd.DataFrame, checks: quality._Issues) -> pd.Series:
    """``at`` as UTC; missing, unparseable or without a UTC offset is an issue."""
    raw = _text_column(frame, "at").str.strip()
    missing = _blank(raw)
    checks.add(missing, "at", quality.MISSING_FIELD, "at is required")
    shaped = raw.str.match(TIMESTAMP_WITH_OFFSET).fillna(False).astype(bool)
    parsed = pd.to_datetime(raw.where(shaped), utc=True, format="ISO8601", errors="coerce")
    checks.add(
        ~missing & parsed.isna(),
        "at",
        quality.BAD_DATE,
        "at must be an ISO 8601 timestamp with a UTC offset",
    )
    return parsed


def _phone(values: pd.Series) -> pd.Series:
    """E.164-ish: spaces, dashes, dots and parentheses removed."""
    return values.str.replace(r"[\s\-().]", "", regex=True)


def _keyword(body: pd.Series) -> pd.Series:
    """A reply body reduced to the keyword it may be: NFKC, Arabic marks and tatweel and all
    white space removed, trailing punctuation dropped, case folded.  (Explicit character
    classes: pandas' Arrow strings use RE2, whose ``\\W`` is ASCII-only.)"""
    text = body.fillna("").astype(object).map(lambda s: unicodedata.normalize("NFKC", s))
    text = text.astype("string")
    text = text.str.replace(
        r"[\u064B-\u065F\u0670\u0640\s\u200B-\u200F\u2066-\u2069]", "", regex=True
    )
    text = text.str.replace(r"[.!?,;:…'\"¡¿؟،؛。！？)(\]\[*~-]+$", "", regex=True)
    return text.str.casefold()


def _issue(source: str, path: Path, row: int, field: str, reason: str, message: str) -> dict:
    return {
        "source": source,
        "file": str(path),
        "row": int(row),
        "field": field,
        "reason": reason,
        "message": message,
    }


def _issue_records(checks: quality._Issues, source: str, path: Path) -> list[dict]:
    if not checks.parts:
        return []
    found = pd.concat(checks.parts, ignore_index=True)
    rows = checks.frame.loc[found["_idx"], "_line"].to_numpy()
    return [
        _issue(source, path, int(row), field, reason, str(message))
        for row, field, reason, message in zip(
            rows, found["field"], found["reason"], found["message"], strict=True
        )
    ]


# --- recording ----------------------------------------------------------------------------------


def record_feedback(
    engine: sa.Engine,
    *,
    as_of: date,
    bounces: pd.DataFrame | None = None,
    sms_events: pd.DataFrame | None = None,
    email_events: pd.DataFrame | None = None,
) -> dict:
    """Resolve the events to debtors and store them; idempotent.

    Returns ``events_added`` (new ChannelEvent rows), ``events_seen`` (events resolved to a
    debtor, new or already stored), ``delivery_updates`` (messages whose delivery status
    changed), ``unmatched`` (items that match no message or debtor), ``future`` (items dated
    after ``as_of``, left for a later run) and, per ChannelEvent event (bounced, unsubscribed,
    sms_stop, opt_in), the rows added.
    """
    counts: dict[str, int] = {
        "events_added": 0,
        "events_seen": 0,
        "delivery_updates": 0,
        "unmatched": 0,
        "future": 0,
        **dict.fromkeys(FEEDBACK_EVENTS, 0),
    }
    items = {
        "bounce": _current(bounces, as_of, counts),
        "sms": _current(sms_events, as_of, counts),
        "email": _current(email_events, as_of, counts),
    }
    with engine.begin() as conn:
        messages = _messages(conn, items)
        events: list[pd.DataFrame] = []
        deliveries: list[pd.DataFrame] = []
        if items["bounce"] is not None:
            ev, dl, missed = _resolve_bounces(items["bounce"], messages)
            events.append(ev)
            deliveries.append(dl)
            counts["unmatched"] += missed
        if items["sms"] is not None:
            ev, dl, missed = _resolve_sms(conn, items["sms"], messages)
            events.append(ev)
            deliveries.append(dl)
            counts["unmatched"] += missed
        if items["email"] is not None:
            ev, dl, missed = _resolve_email(items["email"], messages)
            events.append(ev)
            deliveries.append(dl)
            counts["unmatched"] += missed
        new = _insert_events(conn, events)
        counts["events_seen"] = sum(len(e) for e in events)
        counts["events_added"] = len(new)
        for event, n in new.value_counts().items():
            counts[str(event)] = counts.get(str(event), 0) + int(n)
        counts["delivery_updates"] = _update_deliveries(conn, deliveries, messages)
    log.info(
        "feedback %s: %d events added (%d seen), %d delivery updates, %d unmatched, %d future",
        as_of,
        counts["events_added"],
        counts["events_seen"],
        counts["delivery_updates"],
        counts["unmatched"],
        counts["future"],
    )
    return counts


def _current(
    frame: pd.DataFrame | None, as_of: date, counts: dict[str, int]
) -> pd.DataFrame | None:
    """The items dated on or before ``as_of``; later ones are counted and left for later."""
    if frame is None or frame.empty:
        return None
    at = pd.to_datetime(frame["at"], utc=True)
    day = at.dt.tz_convert("UTC").dt.normalize().dt.tz_localize(None)
    later = day > pd.Timestamp(as_of)
    counts["future"] += int(later.sum())
    kept = frame.loc[~later].assign(at=at[~later])
    return kept.reset_index(drop=True) if len(kept) else None


def _messages(conn: sa.Connection, items: dict[str, pd.DataFrame | None]) -> pd.DataFrame:
    """The ledger's messages the items may refer to (by contact_key or by provider_id)."""
    keys: list[pd.Series] = []
    ids: list[pd.Series] = []
    if items["bounce"] is not None:
        keys.append(items["bounce"]["contact_key"])
        ids.append(items["bounce"]["message_id"])
    if items["sms"] is not None:
        sms = items["sms"]
        ids.append(sms.loc[sms["type"] == "status", "sid"])
    if items["email"] is not None:
        keys.append(items["email"]["contact_key"])
        ids.append(items["email"]["message_id"])
    m = SentMessage.__table__.c
    cols = [m.contact_key, m.debtor_id, m.channel, m.recipient, m.provider_id]
    cols += [m.delivery_status, m.delivery_at]
    parts = [
        *_lookup(conn, cols, m.contact_key, _distinct(keys)),
        *_lookup(conn, cols, m.provider_id, _distinct(ids)),
    ]
    names = [c.name for c in cols]
    if not parts:
        return pd.DataFrame(columns=names)
    found = pd.concat(parts, ignore_index=True).drop_duplicates("contact_key")
    found["delivery_at"] = _utc(found["delivery_at"])
    return found.reset_index(drop=True)


def _distinct(series: list[pd.Series]) -> list[str]:
    if not series:
        return []
    values = pd.concat(series, ignore_index=True).dropna().astype(str)
    return sorted(set(values[values != ""]))


def _lookup(conn: sa.Connection, cols: list, column: Any, values: list[str]) -> list[pd.DataFrame]:
    """Rows whose ``column`` is one of ``values``, in chunks (SQLite caps bound parameters)."""
    return [
        pd.read_sql(sa.select(*cols).where(column.in_(values[i : i + LOOKUP_CHUNK])), conn)
        for i in range(0, len(values), LOOKUP_CHUNK)
    ]


def _utc(values: pd.Series) -> pd.Series:
    """Ledger timestamps as UTC (SQLite hands back naive UTC, PostgreSQL aware values)."""
    return pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")


def _resolve_message(
    frame: pd.DataFrame, messages: pd.DataFrame, *, by_id: str | None, by_key: str | None
) -> pd.DataFrame:
    """``frame`` joined to its message: by provider_id first (exact), then by contact_key."""
    key = pd.Series(pd.NA, index=frame.index, dtype=object)
    if by_id is not None:
        ids = messages.dropna(subset=["provider_id"]).drop_duplicates("provider_id")
        key = frame[by_id].map(ids.set_index("provider_id")["contact_key"]).astype(object)
    if by_key is not None:
        known = frame[by_key].where(frame[by_key].isin(messages["contact_key"]))
        key = key.where(key.notna(), known.astype(object))
    joined = frame.assign(_key=key.where(key.notna(), None)).merge(
        messages.rename(columns={"contact_key": "_key", "recipient": "sent_to"}),
        on="_key",
        how="left",
    )
    return joined.rename(columns={"_key": "resolved_key"})


def _resolve_bounces(
    bounces: pd.DataFrame, messages: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    joined = _resolve_message(bounces, messages, by_id="message_id", by_key="contact_key")
    matched = joined[joined["resolved_key"].notna()]
    hard = matched[matched["kind"] == "hard"]
    recipient = hard["sent_to"].where(hard["sent_to"].notna(), hard["recipient"])
    detail = pd.DataFrame(
        {
            "status": hard["status"],
            "recipient": recipient,
            "diagnostic": hard["diagnostic"],
        }
    )
    events = pd.DataFrame(
        {
            "source": "bounce",
            "event_id": hard["event_id"],
            "contact_key": hard["resolved_key"],
            "debtor_id": hard["debtor_id"],
            "channel": "email",
            "event": "bounced",
            "received_at": hard["at"],
            "detail": _json_rows(detail),
        }
    )
    deliveries = pd.DataFrame(
        {
            "contact_key": matched["resolved_key"],
            "delivery_status": matched["kind"].map({"hard": "bounced", "soft": "deferred"}),
            "delivery_at": matched["at"],
        }
    )
    return events, deliveries, int(joined["resolved_key"].isna().sum())


def _resolve_sms(
    conn: sa.Connection, sms: pd.DataFrame, messages: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    receipts = sms[(sms["type"] == "status") & sms["status"].isin(list(SMS_DELIVERY))]
    joined = _resolve_message(receipts, messages, by_id="sid", by_key=None)
    matched = joined[joined["resolved_key"].notna()]
    deliveries = pd.DataFrame(
        {
            "contact_key": matched["resolved_key"],
            "delivery_status": matched["status"],
            "delivery_at": matched["at"],
        }
    )
    replies = sms[sms["event"].notna()]
    d = Debtor.__table__.c
    phones = _lookup(conn, [d.debtor_id, d.phone], d.phone, _distinct([replies["phone"]]))
    debtors = (
        pd.concat(phones, ignore_index=True)
        if phones
        else pd.DataFrame(columns=["debtor_id", "phone"])
    )
    who = replies.merge(debtors, on="phone", how="left")
    found = who[who["debtor_id"].notna()]
    events = pd.DataFrame(
        {
            "source": "sms",
            # one reply may stop several debtors sharing the number: one event each
            "event_id": found["event_id"] + "/" + found["debtor_id"],
            "contact_key": None,
            "debtor_id": found["debtor_id"],
            "channel": "sms",
            "event": found["event"],
            "received_at": found["at"],
            "detail": None,
        }
    )
    missed = int(joined["resolved_key"].isna().sum()) + int(
        replies["event_id"].isin(who.loc[who["debtor_id"].isna(), "event_id"]).sum()
    )
    return events, deliveries, missed


def _resolve_email(
    emails: pd.DataFrame, messages: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    opt_outs = emails[emails["event"].notna()]
    who = _resolve_message(opt_outs, messages, by_id=None, by_key="contact_key")
    found = who[who["resolved_key"].notna()]
    events = pd.DataFrame(
        {
            "source": "email",
            "event_id": found["event_id"],
            "contact_key": found["resolved_key"],
            "debtor_id": found["debtor_id"],
            "channel": "email",
            "event": found["event"],
            "received_at": found["at"],
            "detail": found["type"],  # unsubscribe | complaint
        }
    )
    receipts = emails[emails["event"].isna()]
    joined = _resolve_message(receipts, messages, by_id="message_id", by_key=None)
    matched = joined[joined["resolved_key"].notna()]
    deliveries = pd.DataFrame(
        {
            "contact_key": matched["resolved_key"],
            "delivery_status": matched["type"],  # delivered | opened
            "delivery_at": matched["at"],
        }
    )
    missed = int(who["resolved_key"].isna().sum()) + int(joined["resolved_key"].isna().sum())
    return events, deliveries, missed


def _json_rows(frame: pd.DataFrame) -> pd.Series:
    clean = frame.astype(object).where(frame.notna(), None)
    return pd.Series(
        [json.dumps(r, ensure_ascii=False) for r in clean.to_dict("records")],
        index=frame.index,
        dtype=object,
    )


def _insert_events(conn: sa.Connection, parts: list[pd.DataFrame]) -> pd.Series:
    """Insert-or-ignore on (source, event_id), oldest first so ids follow time; returns the
    event of each row actually added."""
    frame = (
        pd.concat([p for p in parts if len(p)], ignore_index=True)
        if any(len(p) for p in parts)
        else pd.DataFrame()
    )
    if frame.empty:
        return pd.Series([], dtype=object)
    at = pd.to_datetime(frame["received_at"], utc=True)
    frame = frame.assign(received_at=at, effective_date=at.dt.date)
    frame = frame.sort_values(["received_at", "source", "event_id"]).drop_duplicates(
        ["source", "event_id"]
    )
    columns = [
        "source",
        "event_id",
        "contact_key",
        "debtor_id",
        "channel",
        "event",
        "effective_date",
        "received_at",
        "detail",
    ]
    out = frame[columns].astype(object)
    out["received_at"] = [t.to_pydatetime() for t in frame["received_at"]]
    rows = out.where(out.notna(), None).to_dict("records")
    table = ChannelEvent.__table__
    stmt = insert_ignore(conn, table, ["source", "event_id"]).returning(table.c.event)
    added = conn.execute(stmt, rows).scalars().all()
    return pd.Series(added, dtype=object)


def _update_deliveries(
    conn: sa.Connection, parts: list[pd.DataFrame], messages: pd.DataFrame
) -> int:
    """The newest outcome per message, written where it is newer than the stored one; one
    executemany.  Returns the messages changed."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return 0
    frame = pd.concat(parts, ignore_index=True)
    frame["delivery_at"] = pd.to_datetime(frame["delivery_at"], utc=True)
    frame["_rank"] = frame["delivery_status"].map(DELIVERY_RANK).fillna(-1)
    latest = frame.sort_values(["delivery_at", "_rank"]).drop_duplicates("contact_key", keep="last")
    latest = latest.reset_index(drop=True)
    stored = messages.set_index("contact_key").reindex(latest["contact_key"]).reset_index(drop=True)
    old_at = stored["delivery_at"]
    old_rank = stored["delivery_status"].map(DELIVERY_RANK).fillna(-1)
    new_at = latest["delivery_at"]
    newer = (
        old_at.isna()
        | (new_at > old_at).fillna(False)
        | ((new_at == old_at).fillna(False) & (latest["_rank"] > old_rank))
    ).astype(bool)
    changes = latest[newer]
    if changes.empty:
        return 0
    m = SentMessage.__table__.c
    stmt = (
        sa.update(SentMessage.__table__)
        .where(
            m.contact_key == sa.bindparam("k"),
            sa.or_(m.delivery_at.is_(None), m.delivery_at <= sa.bindparam("a")),
        )
        .values(delivery_status=sa.bindparam("s"), delivery_at=sa.bindparam("a"))
    )
    conn.execute(
        stmt,
        [
            {"k": k, "s": s, "a": a.to_pydatetime()}
            for k, s, a in zip(
                changes["contact_key"],
                changes["delivery_status"],
                changes["delivery_at"],
                strict=True,
            )
        ],
    )
    return len(changes)


# --- the whole loop -----------------------------------------------------------------------------


def collect_feedback(
    engine: sa.Engine,
    as_of: date,
    *,
    bounce_dir: Path | None,
    sms_events: list[Path],
    email_events: list[Path],
) -> dict:
    """Read every source given (a missing folder or file is nothing to read) and record it.

    Returns the counts of ``record_feedback`` plus ``read`` (items per source) and
    ``quarantine`` (the issues: source, file, row, field, reason, message).  Safe to run twice:
    the second run adds no event.
    """
    issues: list[dict] = []
    bounces = None
    if bounce_dir is not None:
        bounces, found = read_bounces(Path(bounce_dir))
        issues += found
    sms = _read_all(read_sms_events, sms_events, issues)
    emails = _read_all(read_email_events, email_events, issues)
    counts = record_feedback(
        engine, as_of=as_of, bounces=bounces, sms_events=sms, email_events=emails
    )
    counts["read"] = {
        "bounces": 0 if bounces is None else len(bounces),
        "sms": 0 if sms is None else len(sms),
        "email": 0 if emails is None else len(emails),
    }
    counts["quarantine"] = issues
    return counts


def _read_all(reader: Any, paths: Iterable[Path], issues: list[dict]) -> pd.DataFrame | None:
    frames = []
    for path in paths or []:
        path = Path(path)
        if not path.is_file():
            continue
        frame, found = reader(path)
        frames.append(frame)
        issues += found
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None


# --- for the compliance gate --------------------------------------------------------------------


def channel_opt_outs(conn: sa.Connection, as_of: date) -> pd.DataFrame:
    """The channel events effective on or before ``as_of`` in the compliance vocabulary.

    Columns debtor_id, event, channel, effective_date, detail (None), oldest first (append them
    after the AR events: the gate's latest-wins takes the order as the tie-break).  A hard
    bounce becomes ``opt_out`` on email -- a dead address is not contactable -- as long as the
    address that bounced is still the debtor's email: once the AR system has a new address,
    the old bounce no longer blocks it.  unsubscribed, sms_stop and opt_in keep their names.
    """
    ev = ChannelEvent.__table__.c
    d = Debtor.__table__.c
    rows = pd.read_sql(
        sa.select(ev.debtor_id, ev.event, ev.channel, ev.effective_date, ev.detail, d.email)
        .select_from(
            ChannelEvent.__table__.outerjoin(Debtor.__table__, ev.debtor_id == d.debtor_id)
        )
        .where(ev.effective_date <= as_of, ev.event.in_(FEEDBACK_EVENTS))
        .order_by(ev.effective_date, ev.received_at, ev.id),
        conn,
    )
    bounced = rows["event"] == "bounced"
    address = (
        rows["detail"].where(bounced).astype("string").str.extract(r'"recipient":\s*"([^"]*)"')[0]
    )
    current = rows["email"].astype("string").str.strip().str.casefold()
    moved = (
        bounced
        & address.notna()
        & current.notna()
        & (address.str.strip().str.casefold() != current).fillna(False)
    )
    rows = rows[~moved.astype(bool)]
    return pd.DataFrame(
        {
            "debtor_id": rows["debtor_id"].astype(object),
            "event": rows["event"].map(COMPLIANCE_EVENTS).astype(object),
            "channel": rows["channel"].astype(object),
            "effective_date": rows["effective_date"],
            "detail": pd.Series(None, index=rows.index, dtype=object),
        }
    ).reset_index(drop=True)
