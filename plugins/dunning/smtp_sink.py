"""A local SMTP server that keeps every message as a file, so the demo and tests can read what was sent.

Dunning letters must never reach a real debtor from a laptop or CI, yet the code that sends them
must talk real SMTP.  This sink accepts anything on loopback and writes one ``.eml`` per message
into a folder; the envelope (which may differ from the headers, e.g. for Bcc) is kept in
``X-Envelope-From`` / ``X-Envelope-To`` headers prepended to the stored message.

Run it as ``python -m dunning.smtp_sink --host 127.0.0.1 --port 8025 --maildir var/mail``; it stops
cleanly on SIGTERM or SIGINT.  Core module: no Airflow import.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import itertools
import os
import signal
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

ENVELOPE_FROM = "X-Envelope-From"
ENVELOPE_TO = "X-Envelope-To"

_counter = itertools.count()
_counter_lock = threading.Lock()


def _next_name() -> str:
    # Nanosecond time first so a plain sort is arrival order; the counter breaks ties within one
    # process and the pid keeps two sinks sharing a folder from colliding.
    with _counter_lock:
        seq = next(_counter)
    return f"{time.time_ns():020d}-{seq:06d}-{os.getpid()}.eml"


def store_message(maildir: Path, mail_from: str, rcpt_tos: list[str], content: bytes) -> Path:
    """Write atomically (tmp file + rename) so a reader polling the folder never sees half a mail.

    No fsync: this is a sink for demos and tests, and an fsync per message made it, not the
    sender, the bottleneck of a wave (it capped the measured rate near 85 messages/s)."""
    maildir.mkdir(parents=True, exist_ok=True)
    tmpdir = maildir / ".tmp"
    tmpdir.mkdir(exist_ok=True)
    name = _next_name()
    header = f"{ENVELOPE_FROM}: {mail_from}\r\n{ENVELOPE_TO}: {', '.join(rcpt_tos)}\r\n"
    tmp = tmpdir / name
    with open(tmp, "wb") as fh:
        fh.write(header.encode("utf-8"))
        fh.write(content)
    final = maildir / name
    os.replace(tmp, final)
    return final


def read_mailbox(maildir: Path) -> list[EmailMessage]:
    """Parse with the modern policy so tests get ``EmailMessage`` (``get_body``, ``iter_attachments``)."""
    maildir = Path(maildir)
    if not maildir.is_dir():
        return []
    messages: list[EmailMessage] = []
    for path in sorted(maildir.glob("*.eml")):
        with open(path, "rb") as fh:
            msg = email.message_from_binary_file(fh, policy=email.policy.default)
        messages.append(cast(EmailMessage, msg))
    return messages


class MaildirHandler:
    """aiosmtpd handler: accept every recipient, store every message."""

    def __init__(self, maildir: Path) -> None:
        self.maildir = Path(maildir)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        store_message(self.maildir, envelope.mail_from or "", list(envelope.rcpt_tos), content)
        return "250 Message accepted for delivery"


def serve(host: str, port: int, maildir: Path) -> None:
    """Block until SIGTERM/SIGINT; the controller's own thread does the SMTP work."""
    from aiosmtpd.controller import Controller

    maildir = Path(maildir)
    maildir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    controller = Controller(
        MaildirHandler(maildir),
        hostname=host,
        port=port,
        server_hostname="dunning-smtp-sink",
        enable_SMTPUTF8=True,
        ready_timeout=10,
    )
    controller.start()
    print(f"smtp sink listening on {host}:{port}, storing in {maildir}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        controller.stop()
        print("smtp sink stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dunning.smtp_sink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    args = parser.parse_args(argv)
    serve(args.host, args.port, Path(args.maildir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
