"""Email: multipart HTML + text reminders over SMTP, one connection for many messages.

Every message carries the opt-out the law and the mailbox providers ask for: a one-click
``List-Unsubscribe`` (RFC 8058, required by Gmail and Yahoo for bulk senders) next to the
unsubscribe link in the footer, and ``X-Dunning-Contact`` so a bounce or a complaint finds its
way back to the contact that caused it.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any

import pandas as pd

from dunning import clock
from dunning.channels import Outcome, ProviderError, RateLimiter, Session

CONTACT_HEADER = "X-Dunning-Contact"


@dataclass(frozen=True)
class SmtpSettings:
    """What the Airflow SMTP connection says (the adapter reads it; no Airflow import here)."""

    host: str
    port: int
    user: str | None = None
    password: str | None = None
    ssl: bool = False  # SMTPS from the first byte (port 465)
    starttls: bool = False
    timeout: float = 30.0
    messages_per_connection: int = 200
    rate_per_second: float | None = None


def message_id(contact_key: str, sender: str) -> str:
    """Deterministic per contact: the same reminder always has the same Message-ID, so a mail
    system that de-duplicates by it helps rather than hurts, and a bounce names the contact."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "dunning.invalid"
    return f"<{hashlib.sha256(contact_key.encode()).hexdigest()[:32]}@{domain}>"


# Bidirectional overrides, embeddings, isolates and marks: in a display name they can make
# "gnp.exe" read as "exe.png", or a sender's name read as somebody else's.
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _one_line(value: str) -> str:
    """Header text from data can never start a new header (CR/LF injection)."""
    return " ".join(value.split())


def _display_name(value: str) -> str:
    """A name from the AR data, on one line, and unable to reorder what the reader sees (the
    subject keeps its marks: the locale's amounts carry them on purpose)."""
    return _one_line(BIDI_CONTROLS.sub("", value))


def build_message(
    *,
    contact_key: str,
    sender: str,
    to_address: str,
    to_name: str | None,
    subject: str,
    text: str,
    html: str,
    locale: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str | None = None,
    reply_to: str | None = None,
    at: pd.Timestamp | None = None,
) -> Message:
    """One reminder as a MIME message: text first, HTML as the preferred alternative.

    Built with the ``email.mime`` classes (the compat32 policy): the modern ``EmailMessage``
    re-parses and re-folds every header and took about 5 ms a message, which alone capped a
    wave below the 200 messages/s it must reach; these take about 1.5 ms.
    """
    msg = MIMEMultipart("alternative")
    msg["From"] = sender
    # formataddr quotes or encodes the display name: a name with a comma ("Smith, Jane") stays
    # one recipient.
    msg["To"] = formataddr((_display_name(to_name or ""), to_address), charset="utf-8")
    msg["Subject"] = Header(_one_line(subject), "utf-8")
    msg["Date"] = format_datetime((at or clock.now()).to_pydatetime())
    msg["Message-ID"] = message_id(contact_key, sender)
    if reply_to:
        msg["Reply-To"] = reply_to
    targets = [f"<{unsubscribe_url}>"]
    if unsubscribe_mailto:
        targets.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe%20{contact_key}>")
    msg["List-Unsubscribe"] = ", ".join(targets)
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg[CONTACT_HEADER] = contact_key
    msg["Content-Language"] = locale
    msg.attach(MIMEText(text, "plain", "utf-8"))
    msg.attach(MIMEText(html, "html", "utf-8"))
    return msg


class _DataTracking:
    """Knows whether the message itself started to go out (DATA): a connection lost before
    that left nothing with the server, so the send can be released and retried, not reviewed."""

    data_started = False

    def data(self, msg: Any) -> Any:
        self.data_started = True
        return super().data(msg)  # type: ignore[misc]


class _SMTP(_DataTracking, smtplib.SMTP):
    pass


class _SMTPSSL(_DataTracking, smtplib.SMTP_SSL):
    pass


class SmtpSender(Session):
    """One SMTP session reused for many messages (reconnecting every
    ``messages_per_connection``), rate-limited, with errors sorted into what a wave can do:

    - 5xx refusals of this message: ``ProviderError(permanent=True)`` (mark it failed);
    - 4xx, refused connections, and connections lost before DATA: ``ProviderError(permanent=
      False)`` (nothing left our hands: release it and let the task retry);
    - a connection lost once the message was going out propagates as is: its outcome is
      unknown.
    """

    def __init__(self, settings: SmtpSettings, envelope_from: str | None = None) -> None:
        self.settings = settings
        self.envelope_from = envelope_from
        self.limiter = RateLimiter(settings.rate_per_second)
        self._client: _SMTP | _SMTPSSL | None = None
        self._sent_on_connection = 0

    def open(self) -> None:
        s = self.settings
        try:
            if s.ssl:
                client: _SMTP | _SMTPSSL = _SMTPSSL(
                    s.host, s.port, timeout=s.timeout, context=ssl.create_default_context()
                )
            else:
                client = _SMTP(s.host, s.port, timeout=s.timeout)
                if s.starttls:
                    client.starttls(context=ssl.create_default_context())
            if s.user:
                client.login(s.user, s.password or "")
        except (OSError, smtplib.SMTPException) as exc:
            raise ProviderError(
                f"SMTP connect to {s.host}:{s.port} failed: {exc}", permanent=False
            ) from exc
        self._client = client
        self._sent_on_connection = 0

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.quit()
            except (OSError, smtplib.SMTPException):
                self._client.close()
            self._client = None

    def ready(self) -> None:
        """Make sure a usable session exists *before* a message is claimed, so a dead server
        costs a retry, not an unknown outcome."""
        if (
            self._client is None
            or self._sent_on_connection >= self.settings.messages_per_connection
        ):
            self.close()
            self.open()

    def send(self, message: Message, recipient: str) -> Outcome:
        """One message to exactly ``recipient`` (never whatever the headers parse to)."""
        self.ready()
        assert self._client is not None
        self.limiter.wait()
        client = self._client
        client.data_started = False
        try:
            refused = client.send_message(
                message, from_addr=self.envelope_from, to_addrs=[recipient]
            )
        except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            if client.data_started:
                raise
            self._client = None  # a fresh session for the retry
            raise ProviderError(
                "SMTP connection lost before the message was handed over", permanent=False
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise ProviderError(f"recipient refused: {codes}", permanent=min(codes) >= 500) from exc
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            raise ProviderError(
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=exc.smtp_code >= 500
            ) from exc
        self._sent_on_connection += 1
        if refused:
            raise ProviderError(f"recipient refused: {list(refused.values())}", permanent=True)
        return Outcome("smtp", str(message["Message-ID"]), "accepted")
