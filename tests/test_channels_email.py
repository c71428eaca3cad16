"""The email channel: what a mailbox provider and a debtor see, and how SMTP answers are sorted."""

from __future__ import annotations

import email
import email.policy
import socket

import pytest
from aiosmtpd.controller import Controller

from dunning.channels import ProviderError
from dunning.channels.email import SmtpSender, SmtpSettings, build_message, message_id


def _message(**kw):
    args = {
        "contact_key": "D1:standard:overdue:email:2026-11-23",
        "sender": "Billing <billing@example.com>",
        "to_address": "jane@example.com",
        "to_name": "Smith, Jane",
        "subject": "Payment reminder: $1,734.56 is overdue",
        "text": "Dear Jane,\nTotal due: $1,734.56",
        "html": "<p>Dear Jane,</p><p>Total due: $1,734.56</p>",
        "locale": "en",
        "unsubscribe_url": "https://pay.example.com/unsubscribe?c=D1&t=tok",
        "unsubscribe_mailto": "unsubscribe@example.com",
    }
    return build_message(**{**args, **kw})


def parsed(msg):
    return email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)


def test_bidi_controls_never_reach_the_display_name():
    """U+202E in a name from the AR data would make the mail client show it reversed."""
    msg = parsed(_message(to_name="Jane \u202egnp.exe\u202c Smith\u2066"))
    assert msg["To"].addresses[0].display_name == "Jane gnp.exe Smith"
    assert msg["To"].addresses[0].addr_spec == "jane@example.com"


def test_a_reminder_carries_one_click_unsubscribe_and_both_bodies():
    msg = parsed(_message())
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Unsubscribe"].startswith("<https://pay.example.com/unsubscribe?")
    assert "mailto:unsubscribe@example.com" in msg["List-Unsubscribe"]
    assert msg["X-Dunning-Contact"] == "D1:standard:overdue:email:2026-11-23"
    assert msg["Content-Language"] == "en"
    assert msg.get_body(("plain",)).get_content().startswith("Dear Jane")
    assert "<p>Dear Jane,</p>" in msg.get_body(("html",)).get_content()
    # the same contact always gets the same Message-ID, so a bounce names the contact
    assert msg["Message-ID"] == message_id("D1:standard:overdue:email:2026-11-23", "b@example.com")


def test_a_name_with_a_comma_is_one_recipient_and_data_cannot_add_headers():
    msg = parsed(
        _message(to_name="Smith, Jane\r\nBcc: victim@example.com", subject="Hi\nBcc: x@y.z")
    )
    assert [a.addr_spec for a in msg["To"].addresses] == ["jane@example.com"]
    assert msg["Bcc"] is None
    assert "\n" not in msg["Subject"]


def test_non_ascii_subjects_and_names_survive_the_trip():
    msg = parsed(_message(to_name="سارة العتيبي", subject="تذكير بالسداد: ‏1,234.56 ر.س."))
    assert msg["Subject"] == "تذكير بالسداد: ‏1,234.56 ر.س."
    assert msg["To"].addresses[0].display_name == "سارة العتيبي"


class Refusing:
    """An SMTP server that refuses some recipients permanently and some temporarily."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.sessions: set[int] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("gone@"):
            return "550 5.1.1 no such user"
        if address.startswith("full@"):
            return "452 4.2.2 mailbox full"
        if address.startswith("hangup@"):  # the server goes away before the message is sent
            server.transport.close()
            return "421 closing"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.sessions.add(id(session))
        self.received.extend(envelope.rcpt_tos)
        return "250 queued"


@pytest.fixture
def refusing():
    handler = Refusing()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def test_one_session_carries_many_messages_and_refusals_are_sorted(refusing):
    handler, port = refusing
    settings = SmtpSettings(host="127.0.0.1", port=port, ssl=False, messages_per_connection=3)
    with SmtpSender(settings, envelope_from="bounces@example.com") as sender:
        for i in range(5):
            sender.send(_message(to_address=f"p{i}@example.com"), f"p{i}@example.com")
        with pytest.raises(ProviderError) as gone:
            sender.send(_message(to_address="gone@example.com"), "gone@example.com")
        assert gone.value.permanent
        with pytest.raises(ProviderError) as full:
            sender.send(_message(to_address="full@example.com"), "full@example.com")
        assert not full.value.permanent
    assert handler.received == [f"p{i}@example.com" for i in range(5)]
    assert len(handler.sessions) == 2  # five messages, reconnecting after three


def test_a_connection_lost_before_the_message_went_out_is_a_retry_not_an_unknown(refusing):
    handler, port = refusing
    settings = SmtpSettings(host="127.0.0.1", port=port, ssl=False)
    with SmtpSender(settings) as sender:
        with pytest.raises(ProviderError) as lost:
            sender.send(_message(to_address="hangup@example.com"), "hangup@example.com")
        assert not lost.value.permanent and not lost.value.uncertain
        sender.send(_message(to_address="p@example.com"), "p@example.com")  # a fresh session
    assert handler.received == ["p@example.com"]


def test_an_unreachable_server_is_a_retry_not_a_failed_message():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here
    with pytest.raises(ProviderError) as err:
        SmtpSender(SmtpSettings(host="127.0.0.1", port=port, ssl=False, timeout=2)).open()
    assert not err.value.permanent
