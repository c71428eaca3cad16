"""A local SMS provider speaking the Twilio Messages API, so the demo and tests send real HTTP.

No text may reach a real phone from a laptop or CI, yet :class:`dunning.channels.sms.SmsClient`
must be proven against a real HTTP server with basic auth, form bodies, keep-alive and provider
error codes.  This server, on loopback only, implements

- ``POST /2010-04-01/Accounts/<sid>/Messages.json`` (form fields ``To``, ``From``, ``Body``;
  header ``I-Twilio-Idempotency-Token``): basic auth must be the account SID and token given at
  start (else 401, code 20003); ``<sid>`` must be that account (else 404, code 20404); ``From``
  and ``To`` must be E.164 (``+`` then digits; else 400 with code 21212 / 21211); a ``To`` ending
  in ``0000`` is refused as not a mobile number (400, code 21614, the number echoed in the
  message the way Twilio does, so clients are tested for keeping it out of their logs); an empty
  body is 21602, more than 1600 characters 21617.  Accepted: 201 with ``sid`` (``SM`` + 32 hex),
  ``status`` ``queued``, ``to``, ``from``, ``body``, ``num_segments`` (a string, as Twilio sends it).
- ``GET /health``: 200 ``{"status": "ok", "messages": n, "connections": n}``.

Every accepted message is one JSON line in ``DIR/messages.jsonl`` (``sid``, ``account_sid``,
``to``, ``from``, ``body``, ``num_segments``, ``idempotency_token``, ``received_at`` in ISO UTC,
``connection``: the server's serial number of the TCP connection it came on, so a test can see
keep-alive at work) and is followed by a delivery receipt in ``DIR/events.jsonl``:
``{"type": "status", "sid", "status": "delivered", "to", "at"}``.  :func:`add_inbound` appends
an inbound text there (how a test or the demo makes a debtor answer STOP); the run's feedback
step reads that file as the provider's event feed.  Lines are written whole, under a thread lock
and an ``flock`` (the sink and ``add_inbound`` may be different processes), with one ``write``
on an ``O_APPEND`` descriptor, so readers never see two lines interleaved.

The sink does not deduplicate on the idempotency token (Twilio's Messages API does not promise
that either): a second send with the same token is a second message, so exactly-once is proven
by the sender, and tests can check ``idempotency_token`` is unique.

Run it as ``python -m dunning.sms_sink --host 127.0.0.1 --port 8026 --dir var/sms --account AC...
--token T`` (the token may come from ``DUNNING_SMS_TOKEN`` instead, keeping it out of ``ps``);
it stops cleanly on SIGTERM or SIGINT.  Core module: no Airflow import.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import fcntl
import hmac
import itertools
import json
import os
import re
import signal
import sys
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dunning.channels.sms import IDEMPOTENCY_HEADER, segments

MESSAGES_FILE = "messages.jsonl"
EVENTS_FILE = "events.jsonl"
TOKEN_ENV = "DUNNING_SMS_TOKEN"
MAX_BODY_CHARS = 1600
MAX_REQUEST_BYTES = 64 * 1024

_MESSAGES_ROUTE = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_WRITE_LOCK = threading.Lock()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso(at: datetime | str | None) -> str:
    if at is None:
        return _now_iso()
    if isinstance(at, str):
        return at
    if at.tzinfo is None:
        raise ValueError("an aware datetime is required (UTC or with an offset)")
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_sid() -> str:
    return "SM" + uuid.uuid4().hex


def _append(path: Path, *records: dict[str, Any]) -> None:
    """Append whole JSON lines: thread lock + file lock + one write on an O_APPEND descriptor."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _WRITE_LOCK:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, "rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
            try:
                raw = fh.read()
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]


def read_messages(directory: Path | str) -> list[dict[str, Any]]:
    """Every message the sink accepted, in arrival order."""
    return _read_jsonl(Path(directory) / MESSAGES_FILE)


def read_events(directory: Path | str) -> list[dict[str, Any]]:
    """Delivery receipts (``type`` ``status``) and inbound texts (``type`` ``inbound``), in order."""
    return _read_jsonl(Path(directory) / EVENTS_FILE)


def add_inbound(
    directory: Path | str,
    from_number: str,
    body: str,
    at: datetime | str | None = None,
    *,
    to: str | None = None,
) -> dict[str, Any]:
    """Record a text *from* a debtor (e.g. ``STOP``) as the provider would report it; returns it.

    ``at``: an aware datetime or an ISO string; default now.  ``to``: our number it was sent to.
    """
    event: dict[str, Any] = {
        "type": "inbound",
        "sid": _new_sid(),
        "from": from_number,
        "body": body,
        "at": _iso(at),
    }
    if to is not None:
        event["to"] = to
    _append(Path(directory) / EVENTS_FILE, event)
    return event


# --------------------------------------------------------------------------------------------
# the HTTP server


class SmsSinkServer(ThreadingHTTPServer):
    """Holds what the handlers share: the folder, the credentials, the counters."""

    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold up the shutdown
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], directory: Path, account: str, token: str):
        self.directory = Path(directory)
        self.account = account
        self.token = token
        self.connections = itertools.count(1)
        self.connections_seen = 0
        self.messages_accepted = len(read_messages(self.directory))
        self.counter_lock = threading.Lock()
        super().__init__(address, SmsHandler)


def _error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class SmsHandler(BaseHTTPRequestHandler):
    server: SmsSinkServer
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "dunning-sms-sink/1"
    timeout = 60  # an idle keep-alive connection is closed after this long

    def setup(self) -> None:
        super().setup()
        with self.server.counter_lock:
            self.connection_no = next(self.server.connections)
            self.server.connections_seen = self.connection_no

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry no PII (the body is never logged), but one line per text is noise.
        return

    def log_error(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"sms sink: {format % args}\n")

    # -- plumbing

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="Twilio API"')
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            return None
        if size < 0 or size > MAX_REQUEST_BYTES:
            return None
        return self.rfile.read(size)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(
            user.encode(), self.server.account.encode()
        ) & hmac.compare_digest(password.encode(), self.server.token.encode())

    # -- routes

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/health":
            with self.server.counter_lock:
                stats = {
                    "status": "ok",
                    "messages": self.server.messages_accepted,
                    "connections": self.server.connections_seen,
                }
            self._send_json(200, stats)
            return
        self._send_json(*_error(404, 20404, "The requested resource was not found"))

    def do_POST(self) -> None:
        raw = self._read_body()
        if raw is None:
            self.close_connection = True
            self._send_json(*_error(400, 20001, "Invalid request body"))
            return
        match = _MESSAGES_ROUTE.match(urlsplit(self.path).path)
        if match is None:
            self._send_json(*_error(404, 20404, "The requested resource was not found"))
            return
        if not self._authorized():
            self._send_json(*_error(401, 20003, "Authenticate"))
            return
        if match.group(1) != self.server.account:
            self._send_json(*_error(404, 20404, "The requested resource was not found"))
            return
        try:
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            self._send_json(*_error(400, 20001, "Invalid request body encoding"))
            return
        status, payload = self._create(
            to=(form.get("To") or [""])[0].strip(),
            sender=(form.get("From") or [""])[0].strip(),
            body=(form.get("Body") or [""])[0],
            token=self.headers.get(IDEMPOTENCY_HEADER),
        )
        self._send_json(status, payload)

    def _create(
        self, *, to: str, sender: str, body: str, token: str | None
    ) -> tuple[int, dict[str, Any]]:
        if not sender:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not _E164.match(sender):
            return _error(400, 21212, "Invalid 'From' Phone Number")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not _E164.match(to):
            return _error(400, 21211, "Invalid 'To' Phone Number")
        if to.endswith("0000"):
            return _error(400, 21614, f"The 'To' number {to} is not a mobile number")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY_CHARS:
            return _error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        sid = _new_sid()
        received = _now_iso()
        num_segments = str(segments(body))
        account = self.server.account
        record = {
            "sid": sid,
            "account_sid": account,
            "to": to,
            "from": sender,
            "body": body,
            "num_segments": num_segments,
            "idempotency_token": token,
            "received_at": received,
            "connection": self.connection_no,
        }
        receipt = {"type": "status", "sid": sid, "status": "delivered", "to": to, "at": _now_iso()}
        directory = self.server.directory
        with self.server.counter_lock:
            # Under the counter lock too, so messages.jsonl and the count agree at any moment.
            _append(directory / MESSAGES_FILE, record)
            _append(directory / EVENTS_FILE, receipt)
            self.server.messages_accepted += 1
        return 201, {
            "sid": sid,
            "account_sid": account,
            "to": to,
            "from": sender,
            "body": body,
            "status": "queued",
            "num_segments": num_segments,
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": received,
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
        }


def serve(host: str, port: int, directory: Path, account: str, token: str) -> None:
    """Block until SIGTERM/SIGINT; requests are served on a background thread."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    server = SmsSinkServer((host, port), directory, account, token)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.daemon = True
    thread.start()
    print(f"sms sink listening on {host}:{port}, storing in {directory}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        with contextlib.suppress(OSError):
            server.server_close()
        print("sms sink stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dunning.sms_sink", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True, help="folder for messages.jsonl and events.jsonl")
    parser.add_argument("--account", required=True, help="the account SID clients must use")
    parser.add_argument("--token", default=None, help=f"auth token (default: ${TOKEN_ENV})")
    args = parser.parse_args(argv)
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        parser.error(f"--token or ${TOKEN_ENV} is required")
    serve(args.host, args.port, Path(args.dir), args.account, token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
