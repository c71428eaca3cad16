"""The channel feedback loop: bounces, unsubscribes, STOP replies and receipts reach the ledger."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.message import Message as RawMessage
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from dunning import feedback, ledger
from tests.factories import ledger_debtor

AS_OF = date(2026, 11, 23)
LATER = date(2026, 11, 25)
SENT = datetime(2026, 11, 20, 14, tzinfo=UTC)

# debtor_id, email, phone
DEBTORS = [
    ("D1", "d1@example.test", "+15550000001"),
    ("D2", "d2@example.test", "+15550000002"),
    ("D3", "d3@example.test", "+33612345678"),
    ("D4", "d4@example.test", "+971501234567"),
    ("D5", "d5@example.test", "+15550000001"),  # shares D1's phone (a household)
]
# contact_key, debtor_id, channel, recipient, provider_id
MESSAGES = [
    ("D1|s1|email|2026-11-20", "D1", "email", "d1@example.test", "<d1-s1@dunning.test>"),
    ("D2|s1|email|2026-11-20", "D2", "email", "d2@example.test", "<d2-s1@dunning.test>"),
    ("D3|s1|email|2026-11-20", "D3", "email", "d3@example.test", "<d3-s1@dunning.test>"),
    ("D4|s1|email|2026-11-20", "D4", "email", "d4@example.test", "<d4-s1@dunning.test>"),
    ("D5|s1|email|2026-11-20", "D5", "email", "d5@example.test", "<d5-s1@dunning.test>"),
    ("D1|s1|sms|2026-11-20", "D1", "sms", "+15550000001", "SMd1"),
]


def _at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def _iso(day: int, hour: int = 12) -> str:
    return _at(day, hour).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- building mail -------------------------------------------------------------------------------


def _original(contact_key: str, message_id: str, to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Acme Billing <billing@acme.test>"
    msg["To"] = to
    msg["Subject"] = "Your invoices are overdue"
    msg["Message-ID"] = message_id
    msg["X-Dunning-Contact"] = contact_key
    msg.set_content("Please pay the amount of 450 USD.")
    return msg


def _dsn(
    dsn_id: str | None,
    at: datetime,
    recipients: list[dict[str, str]],
    original: EmailMessage | None,
    *,
    headers_only: bool = False,
) -> bytes:
    """An RFC 3464 report: human text, message/delivery-status, the returned original."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.test>"
    report["To"] = "bounces@acme.test"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = format_datetime(at)
    if dsn_id:
        report["Message-ID"] = dsn_id
    report.attach(
        MIMEText("I'm sorry to have to inform you that your message could not be delivered.")
    )
    status = MIMEBase("message", "delivery-status")
    per_message = RawMessage()
    per_message["Reporting-MTA"] = "dns; mx.example.test"
    blocks = [per_message]
    for fields in recipients:
        block = RawMessage()
        for name, value in fields.items():
            block[name] = value
        blocks.append(block)
    status.set_payload(blocks)
    report.attach(status)
    if original is not None:
        if headers_only:
            part = MIMEBase("text", "rfc822-headers")
            head = original.as_string().split("\n\n", 1)[0] + "\n"
            part.set_payload(head)
            report.attach(part)
        else:
            report.attach(MIMEMessage(original))
    return report.as_bytes()


def _eml(folder: Path, name: str, content: bytes) -> Path:
    """As smtp_sink stores it: the envelope first, then the message."""
    path = folder / name
    path.write_bytes(b"X-Envelope-From: <>\r\nX-Envelope-To: bounces@acme.test\r\n" + content)
    return path


def _out_of_office() -> bytes:
    msg = EmailMessage()
    msg["From"] = "d3@example.test"
    msg["To"] = "bounces@acme.test"
    msg["Subject"] = "Automatic reply: Your invoices are overdue"
    msg["Auto-Submitted"] = "auto-replied"
    msg["Date"] = format_datetime(_at(22))
    msg["Message-ID"] = "<ooo-1@example.test>"
    msg.set_content("I am out of the office until 1 December. Status 5.1.1 means nothing here.")
    return msg.as_bytes()


def _inline_bounce() -> bytes:
    """The non-standard kind: a plain text notice quoting the original's headers."""
    msg = EmailMessage()
    msg["From"] = "MAILER-DAEMON@legacy.example.test"
    msg["To"] = "bounces@acme.test"
    msg["Subject"] = "failure notice"
    msg["Date"] = format_datetime(_at(22, 9))
    msg["Message-ID"] = "<inline-1@legacy.example.test>"
    msg.set_content(
        "Hi. This is the qmail-send program at legacy.example.test.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        "<d5@example.test>:\n"
        "550 5.1.1 <d5@example.test>: Recipient address rejected: User unknown\n\n"
        "--- Below this line is a copy of the message.\n\n"
        "Return-Path: <bounces@acme.test>\n"
        "From: billing@acme.test\n"
        "To: d5@example.test\n"
        "Subject: Your invoices are overdue\n"
        "Message-ID: <d5-s1@dunning.test>\n"
        "X-Dunning-Contact: D5|s1|email|2026-11-20\n\n"
        "Please pay 450 USD.\n"
    )
    return msg.as_bytes()


@pytest.fixture
def mailbox(tmp_path: Path) -> Path:
    folder = tmp_path / "bounces"
    folder.mkdir()
    hard = _dsn(
        "<dsn-hard@mx.example.test>",
        _at(21, 10),
        [
            {
                "Final-Recipient": "rfc822; d1@example.test",
                "Action": "failed",
                "Status": "5.1.1",
                "Diagnostic-Code": "smtp; 550 5.1.1 <d1@example.test>: user unknown",
            }
        ],
        _original(MESSAGES[0][0], MESSAGES[0][4], "d1@example.test"),
    )
    soft = _dsn(
        "<dsn-soft@mx.example.test>",
        _at(21, 11),
        [
            {
                "Final-Recipient": "rfc822; d2@example.test",
                "Action": "delayed",
                "Status": "4.2.2",
                "Diagnostic-Code": "smtp; 452 4.2.2 mailbox full",
            }
        ],
        _original(MESSAGES[1][0], MESSAGES[1][4], "d2@example.test"),
        headers_only=True,
    )
    broken = _dsn(
        "<dsn-broken@mx.example.test>",
        _at(21, 12),
        [{"Final-Recipient": "rfc822; d4@example.test", "Remark": "no action, no status"}],
        _original(MESSAGES[3][0], MESSAGES[3][4], "d4@example.test"),
    )
    _eml(folder, "01-hard.eml", hard)
    _eml(folder, "02-soft.eml", soft)
    _eml(folder, "03-ooo.eml", _out_of_office())
    _eml(folder, "04-broken.eml", broken)
    _eml(folder, "05-inline.eml", _inline_bounce())
    (folder / "notes.txt").write_text("not a message")
    return folder


def _jsonl(path: Path, lines: list[object]) -> Path:
    text = [
        line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines
    ]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def sms_file(tmp_path: Path) -> Path:
    return _jsonl(
        tmp_path / "sms-events.jsonl",
        [
            {
                "type": "status",
                "sid": "SMd1",
                "status": "delivered",
                "to": "+15550000001",
                "at": _iso(20, 15),
            },
            {
                "type": "inbound",
                "sid": "SMin1",
                "from": "+15550000001",
                "body": "STOP",
                "at": _iso(22, 8),
            },
            {
                "type": "inbound",
                "sid": "SMin2",
                "from": "+33 6 12 34 56 78",
                "body": "stop ",
                "at": _iso(22, 9),
            },
            {
                "type": "inbound",
                "sid": "SMin3",
                "from": "+971501234567",
                "body": "إيقاف",
                "at": _iso(22, 10),
            },
            {
                "type": "inbound",
                "sid": "SMin4",
                "from": "+15550000002",
                "body": "START",
                "at": _iso(22, 11),
            },
            "{this is not json",
            {"type": "inbound", "sid": "SMin5", "body": "STOP", "at": _iso(22, 12)},
            {
                "type": "inbound",
                "sid": "SMin6",
                "from": "+15559999999",
                "body": "Stop.",
                "at": _iso(22, 13),
            },
            {
                "type": "inbound",
                "sid": "SMin7",
                "from": "+15550000002",
                "body": "I will pay Friday",
                "at": _iso(22, 14),
            },
            {
                "type": "inbound",
                "sid": "SMin8",
                "from": "+15550000002",
                "body": "STOP",
                "at": _iso(24, 9),
            },
        ],
    )


@pytest.fixture
def email_file(tmp_path: Path) -> Path:
    return _jsonl(
        tmp_path / "email-events.jsonl",
        [
            {"type": "unsubscribe", "id": "u-1", "contact_key": MESSAGES[2][0], "at": _iso(22, 16)},
            {"type": "complaint", "id": "c-1", "contact_key": MESSAGES[3][0], "at": _iso(22, 17)},
            {"type": "delivered", "id": "r-1", "message_id": MESSAGES[2][4], "at": _iso(20, 15)},
            {"type": "opened", "id": "r-2", "message_id": MESSAGES[2][4], "at": _iso(21, 8)},
            {
                "type": "unsubscribe",
                "id": "u-2",
                "contact_key": "NOBODY|s1|email|2026-11-20",
                "at": _iso(22),
            },
            {"type": "unsubscribe", "id": "u-3", "contact_key": MESSAGES[0][0]},
        ],
    )


def _seed(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ledger.Debtor.__table__),
            [ledger_debtor(d, AS_OF, email=mail, phone=phone) for d, mail, phone in DEBTORS],
        )
        conn.execute(
            sa.insert(ledger.Message.__table__),
            [
                {
                    "contact_key": key,
                    "as_of": date(2026, 11, 20),
                    "debtor_id": debtor,
                    "channel": channel,
                    "template": "reminder_overdue",
                    "template_version": "1",
                    "locale": "en",
                    "recipient": recipient,
                    "status": "sent",
                    "claim": "run-1",
                    "claimed_at": SENT,
                    "sent_at": SENT,
                    "provider": "smtp" if channel == "email" else "twilio",
                    "provider_id": provider_id,
                }
                for key, debtor, channel, recipient, provider_id in MESSAGES
            ],
        )


def _events(engine: sa.Engine) -> set[tuple]:
    ev = ledger.ChannelEvent.__table__.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(ev.source, ev.debtor_id, ev.channel, ev.event, ev.effective_date)
        )
        return {tuple(r) for r in rows}


def _deliveries(engine: sa.Engine) -> dict[str, str | None]:
    m = ledger.Message.__table__.c
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(m.contact_key, m.delivery_status)).all())


# --- reading -----------------------------------------------------------------------------------


def test_read_bounces_finds_hard_soft_and_inline_and_quarantines_the_broken(mailbox):
    frame, issues = feedback.read_bounces(mailbox)

    assert list(frame.columns) == list(feedback.BOUNCE_COLUMNS)
    by_id = frame.set_index("event_id")
    assert set(by_id.index) == {
        "<dsn-hard@mx.example.test>",
        "<dsn-soft@mx.example.test>",
        "<inline-1@legacy.example.test>",
    }  # the out-of-office reply is ignored
    hard = by_id.loc["<dsn-hard@mx.example.test>"]
    assert (hard["kind"], hard["status"], hard["recipient"]) == ("hard", "5.1.1", "d1@example.test")
    assert (hard["contact_key"], hard["message_id"]) == (MESSAGES[0][0], MESSAGES[0][4])
    assert "user unknown" in hard["diagnostic"]
    assert hard["at"] == _at(21, 10)
    assert hard["file"].endswith("01-hard.eml")
    soft = by_id.loc["<dsn-soft@mx.example.test>"]
    assert (soft["kind"], soft["status"], soft["contact_key"]) == ("soft", "4.2.2", MESSAGES[1][0])
    inline = by_id.loc["<inline-1@legacy.example.test>"]
    assert (inline["kind"], inline["status"], inline["recipient"]) == (
        "hard",
        "5.1.1",
        "d5@example.test",
    )
    assert (inline["contact_key"], inline["message_id"]) == (MESSAGES[4][0], MESSAGES[4][4])

    assert len(issues) == 1
    issue = issues[0]
    assert issue["file"].endswith("04-broken.eml")
    assert (issue["row"], issue["field"], issue["reason"]) == (1, "Action", feedback.BAD_DSN)
    assert issue["message"]


def test_bounce_without_message_id_gets_a_stable_file_hash(tmp_path):
    content = _dsn(
        None,
        _at(21),
        [{"Final-Recipient": "rfc822; d1@example.test", "Action": "failed", "Status": "5.2.1"}],
        _original(MESSAGES[0][0], MESSAGES[0][4], "d1@example.test"),
    )
    _eml(tmp_path, "a.eml", content)
    first, _ = feedback.read_bounces(tmp_path)
    second, _ = feedback.read_bounces(tmp_path)
    assert first["event_id"].iloc[0].startswith("sha256:")
    assert first["event_id"].iloc[0] == second["event_id"].iloc[0]


def test_a_missing_mailbox_is_nothing_to_read(tmp_path):
    frame, issues = feedback.read_bounces(tmp_path / "nowhere")
    assert frame.empty and issues == []


def test_read_sms_events_keywords_and_quarantine(sms_file):
    frame, issues = feedback.read_sms_events(sms_file)

    events = frame.set_index("sid")["event"].to_dict()
    assert events == {
        "SMd1": None,
        "SMin1": "sms_stop",
        "SMin2": "sms_stop",
        "SMin3": "sms_stop",
        "SMin4": "opt_in",
        "SMin6": "sms_stop",
        "SMin8": "sms_stop",
    }  # "I will pay Friday" is not an event
    assert frame.set_index("sid").loc["SMin2", "phone"] == "+33612345678"
    assert frame.set_index("sid").loc["SMd1", "status"] == "delivered"
    assert sorted((i["row"], i["field"], i["reason"]) for i in issues) == [
        (6, "line", "MALFORMED_LINE"),
        (7, "from", "MISSING_FIELD"),
    ]
    assert all(i["file"] == str(sms_file) for i in issues)


@pytest.mark.parametrize(
    ("body", "event"),
    [
        ("STOP", "sms_stop"),
        ("stop ", "sms_stop"),
        ("  Stop all!", "sms_stop"),
        ("Unsubscribe", "sms_stop"),
        ("cancel.", "sms_stop"),
        ("END", "sms_stop"),
        ("quit", "sms_stop"),
        ("ARRÊT", "sms_stop"),
        ("arret!", "sms_stop"),
        ("إيقاف", "sms_stop"),
        ("الغاء", "sms_stop"),
        ("إلغاء؟", "sms_stop"),
        ("START", "opt_in"),
        ("unstop", "opt_in"),
        ("Yes", "opt_in"),
        ("please stop calling me", None),
        ("STOPPED", None),
        ("", None),
    ],
)
def test_sms_keywords(tmp_path, body, event):
    path = _jsonl(
        tmp_path / "e.jsonl",
        [{"type": "inbound", "sid": "SM1", "from": "+15550000001", "body": body, "at": _iso(22)}],
    )
    frame, issues = feedback.read_sms_events(path)
    assert issues == []
    assert list(frame["event"]) == ([event] if event else [])


def test_read_sms_events_rejects_bad_lines_but_keeps_the_rest(tmp_path):
    path = _jsonl(
        tmp_path / "e.jsonl",
        [
            {"type": "mms", "sid": "SM1", "at": _iso(22)},
            {"type": "status", "status": "delivered", "at": _iso(22)},
            {"type": "status", "sid": "SM3", "status": "delivered", "at": "yesterday"},
            {"type": "status", "sid": "SM4", "status": "delivered", "at": "2026-11-22T10:00:00"},
            {"type": "status", "sid": "SM5", "status": "lost", "at": _iso(22)},
            {"type": "status", "sid": "SM6", "status": "failed"},
            "[1, 2]",
            "",
            {
                "type": "status",
                "sid": "SM9",
                "status": "undelivered",
                "at": "2026-11-22T10:00:00+01:00",
            },
        ],
    )
    frame, issues = feedback.read_sms_events(path)
    assert sorted((i["row"], i["field"], i["reason"]) for i in issues) == [
        (1, "type", "BAD_VALUE"),
        (2, "sid", "MISSING_FIELD"),
        (3, "at", "BAD_DATE"),
        (4, "at", "BAD_DATE"),  # no UTC offset: the day is unknown
        (5, "status", "BAD_VALUE"),
        (6, "at", "MISSING_FIELD"),
        (7, "line", "MALFORMED_LINE"),
    ]
    assert list(frame["sid"]) == ["SM9"]
    assert frame["at"].iloc[0] == datetime(2026, 11, 22, 9, tzinfo=UTC)


def test_read_email_events(email_file):
    frame, issues = feedback.read_email_events(email_file)
    assert list(frame["event_id"]) == ["u-1", "c-1", "r-1", "r-2", "u-2"]
    assert list(frame["event"]) == ["unsubscribed", "unsubscribed", None, None, "unsubscribed"]
    assert [(i["row"], i["field"], i["reason"]) for i in issues] == [(6, "at", "MISSING_FIELD")]


# --- recording against the ledger --------------------------------------------------------------


def test_collect_feedback_updates_the_ledger_once(
    ledger_engine, mailbox, sms_file, email_file, tmp_path
):
    _seed(ledger_engine)
    kwargs = {
        "bounce_dir": mailbox,
        "sms_events": [sms_file, tmp_path / "missing.jsonl"],
        "email_events": [email_file],
    }

    first = feedback.collect_feedback(ledger_engine, AS_OF, **kwargs)

    assert _events(ledger_engine) == {
        ("bounce", "D1", "email", "bounced", date(2026, 11, 21)),
        ("bounce", "D5", "email", "bounced", date(2026, 11, 22)),
        ("sms", "D1", "sms", "sms_stop", date(2026, 11, 22)),
        ("sms", "D5", "sms", "sms_stop", date(2026, 11, 22)),  # the same phone as D1
        ("sms", "D3", "sms", "sms_stop", date(2026, 11, 22)),
        ("sms", "D4", "sms", "sms_stop", date(2026, 11, 22)),
        ("sms", "D2", "sms", "opt_in", date(2026, 11, 22)),
        ("email", "D3", "email", "unsubscribed", date(2026, 11, 22)),
        ("email", "D4", "email", "unsubscribed", date(2026, 11, 22)),
    }
    assert _deliveries(ledger_engine) == {
        MESSAGES[0][0]: "bounced",
        MESSAGES[1][0]: "deferred",  # a soft bounce: a delivery status, no compliance event
        MESSAGES[2][0]: "opened",  # delivered, then opened: the newest wins
        MESSAGES[3][0]: None,
        MESSAGES[4][0]: "bounced",
        MESSAGES[5][0]: "delivered",
    }
    assert first["events_added"] == first["events_seen"] == 9
    assert (first["bounced"], first["sms_stop"], first["opt_in"], first["unsubscribed"]) == (
        2,
        4,
        1,
        2,
    )
    assert first["delivery_updates"] == 5
    assert first["unmatched"] == 2  # the unknown number's STOP and the unknown contact_key
    assert first["future"] == 1  # D2's STOP of the 24th waits for its day
    assert sorted((Path(i["file"]).name, i["row"], i["field"]) for i in first["quarantine"]) == [
        ("04-broken.eml", 1, "Action"),
        ("email-events.jsonl", 6, "at"),
        ("sms-events.jsonl", 6, "line"),
        ("sms-events.jsonl", 7, "from"),
    ]

    second = feedback.collect_feedback(ledger_engine, AS_OF, **kwargs)
    assert second["events_added"] == 0
    assert second["events_seen"] == 9
    assert second["delivery_updates"] == 0
    assert len(_events(ledger_engine)) == 9

    later = feedback.collect_feedback(ledger_engine, LATER, **kwargs)
    assert later["events_added"] == 1 and later["sms_stop"] == 1 and later["future"] == 0
    assert ("sms", "D2", "sms", "sms_stop", date(2026, 11, 24)) in _events(ledger_engine)


@pytest.mark.clock
def test_a_backfill_does_not_see_later_events(ledger_engine, sms_file):
    _seed(ledger_engine)
    sms, _ = feedback.read_sms_events(sms_file)
    counts = feedback.record_feedback(ledger_engine, as_of=date(2026, 11, 21), sms_events=sms)
    assert counts["events_added"] == 0
    assert counts["future"] == 6  # every keyword reply is dated the 22nd or later
    assert _deliveries(ledger_engine)[MESSAGES[5][0]] == "delivered"  # the 20th's receipt


def test_an_older_receipt_does_not_overwrite_a_newer_status(ledger_engine):
    _seed(ledger_engine)
    import pandas as pd

    def email(kind: str, at: datetime) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "type": [kind],
                "event_id": [f"{kind}-{at:%d%H}"],
                "contact_key": [None],
                "message_id": [MESSAGES[2][4]],
                "event": [None],
                "at": [pd.Timestamp(at)],
                "file": ["f"],
                "line": [1],
            }
        )

    feedback.record_feedback(ledger_engine, as_of=AS_OF, email_events=email("opened", _at(21)))
    counts = feedback.record_feedback(
        ledger_engine, as_of=AS_OF, email_events=email("delivered", _at(20))
    )
    assert counts["delivery_updates"] == 0
    assert _deliveries(ledger_engine)[MESSAGES[2][0]] == "opened"


def test_record_feedback_with_nothing(ledger_engine):
    counts = feedback.record_feedback(ledger_engine, as_of=AS_OF)
    assert counts["events_added"] == counts["unmatched"] == counts["delivery_updates"] == 0


def test_channel_opt_outs_for_the_compliance_gate(ledger_engine, mailbox, sms_file, email_file):
    _seed(ledger_engine)
    feedback.collect_feedback(
        ledger_engine, LATER, bounce_dir=mailbox, sms_events=[sms_file], email_events=[email_file]
    )

    with ledger_engine.connect() as conn:
        as_of = feedback.channel_opt_outs(conn, AS_OF)
        before = feedback.channel_opt_outs(conn, date(2026, 11, 21))

    assert list(as_of.columns) == ["debtor_id", "event", "channel", "effective_date", "detail"]
    assert as_of["detail"].isna().all()
    rows = set(
        as_of[["debtor_id", "event", "channel", "effective_date"]].itertuples(
            index=False, name=None
        )
    )
    assert rows == {
        ("D1", "opt_out", "email", date(2026, 11, 21)),  # a hard bounce: the address is dead
        ("D5", "opt_out", "email", date(2026, 11, 22)),
        ("D1", "sms_stop", "sms", date(2026, 11, 22)),
        ("D5", "sms_stop", "sms", date(2026, 11, 22)),
        ("D3", "sms_stop", "sms", date(2026, 11, 22)),
        ("D4", "sms_stop", "sms", date(2026, 11, 22)),
        ("D2", "opt_in", "sms", date(2026, 11, 22)),
        ("D3", "unsubscribed", "email", date(2026, 11, 22)),
        ("D4", "unsubscribed", "email", date(2026, 11, 22)),
    }  # D2's STOP of the 24th is not effective yet
    assert list(as_of["effective_date"]) == sorted(as_of["effective_date"])
    assert set(before["debtor_id"]) == {"D1"}

    # The AR system now has a new address for D1: the old bounce no longer blocks email.
    with ledger_engine.begin() as conn:
        d = ledger.Debtor.__table__.c
        conn.execute(
            sa.update(ledger.Debtor.__table__)
            .where(d.debtor_id == "D1")
            .values(email="new@example.test")
        )
        after = feedback.channel_opt_outs(conn, AS_OF)
    assert not ((after["debtor_id"] == "D1") & (after["event"] == "opt_out")).any()
    assert ((after["debtor_id"] == "D1") & (after["event"] == "sms_stop")).any()
