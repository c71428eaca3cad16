"""SMS: counting what a text costs (GSM 03.38 vs UCS-2 segments) and sending it over a Twilio-style REST API.

Counting
    A message goes out in the GSM 7-bit default alphabet when every character is in it (the
    basic table, or the extension table whose characters take an escape septet, so two); any
    other character -- Arabic, ``ê``, ``ç``, an emoji -- makes the whole message UCS-2 (UTF-16:
    an emoji outside the BMP takes two code units).  One segment holds 160 septets or 70 units;
    a concatenated message spends a user-data header per segment, leaving 153 septets or 67
    units each, and an escape pair or a surrogate pair is never split across two segments
    (carriers do not split them either), so ``segments`` packs greedily rather than dividing.
    The empty text is 0 units and **0 segments**: nothing would be sent (the provider rejects an
    empty body), so it must not be counted as a message.

Sending
    :class:`SmsClient` posts to ``{base_url}/2010-04-01/Accounts/{sid}/Messages.json`` (the Twilio
    Messages API shape, which the local :mod:`dunning.sms_sink` serves too) through one
    keep-alive ``httpx.Client``, waits on a :class:`~dunning.channels.RateLimiter` before each call
    and passes the contact's deterministic key as ``I-Twilio-Idempotency-Token``.  Errors become
    :class:`~dunning.channels.ProviderError` (here the subclass :class:`SmsError`):
    ``permanent=True`` only when this one message can never go (bad or non-mobile number, content
    rejected); configuration problems (credentials, sender number, account) and transient ones
    (429, 5xx, network) are ``permanent=False`` so the wave stops instead of failing every
    message.  Exception texts carry the HTTP status and the provider's code and message with any
    phone number or message text scrubbed: no PII reaches a log.

Core module: no Airflow import.  ``SmsSettings.from_connection`` reads any object shaped like an
Airflow ``Connection`` (host, port, schema, login, password, extra_dejson).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx
import phonenumbers

from dunning.channels import Outcome, ProviderError, RateLimiter, Session

# --------------------------------------------------------------------------------------------
# GSM 03.38 / 3GPP TS 23.038

#: The default alphabet, in code order 0x00-0x7F, without 0x1B (the escape to the extension table,
#: which is not a character a text may contain).
GSM7_BASIC: Final[frozenset[str]] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ"
    "ÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The extension table (default language): each costs two septets, ESC + the character.
GSM7_EXTENSION: Final[frozenset[str]] = frozenset("\f^{}\\[~]|€")

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_SINGLE: Final = 160  # septets in a one-segment message
GSM7_MULTI: Final = 153  # septets per segment of a concatenated message (7 go to the UDH)
UCS2_SINGLE: Final = 70  # UTF-16 code units in a one-segment message
UCS2_MULTI: Final = 67  # per segment of a concatenated message


def encoding(text: str) -> Encoding:
    """``"GSM-7"`` if every character is in the basic or extension table, else ``"UCS-2"``."""
    for char in text:
        if char not in GSM7_BASIC and char not in GSM7_EXTENSION:
            return "UCS-2"
    return "GSM-7"


def _costs(text: str, enc: Encoding) -> list[int]:
    """Per character: septets (GSM-7) or UTF-16 code units (UCS-2)."""
    if enc == "GSM-7":
        return [2 if char in GSM7_EXTENSION else 1 for char in text]
    return [2 if ord(char) > 0xFFFF else 1 for char in text]


def units(text: str) -> int:
    """Septets for GSM-7 (extension characters count 2), UTF-16 code units for UCS-2."""
    enc = encoding(text)
    if enc == "GSM-7":
        return len(text) + sum(1 for char in text if char in GSM7_EXTENSION)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def segments(text: str) -> int:
    """How many SMS the text is billed and delivered as; 0 for the empty text.

    Up to 160 septets / 70 units is one segment.  Longer texts are packed greedily into
    153-septet / 67-unit segments without splitting an escape pair or a surrogate pair, which
    can take one more segment than ``ceil(units / 153)`` when such a pair falls on a boundary.
    """
    if not text:
        return 0
    enc = encoding(text)
    single, multi = (GSM7_SINGLE, GSM7_MULTI) if enc == "GSM-7" else (UCS2_SINGLE, UCS2_MULTI)
    costs = _costs(text, enc)
    total = sum(costs)
    if total <= single:
        return 1
    if 2 not in costs:
        return math.ceil(total / multi)
    count, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            count += 1
            used = 0
        used += cost
    return count


# --------------------------------------------------------------------------------------------
# phone numbers


def to_e164(number: str | None, region: str | None) -> str | None:
    """``+<country><number>`` for a valid number, else None (unparseable, impossible, unassigned).

    ``region`` (ISO 3166 alpha-2, e.g. ``"FR"``) is how a national number such as
    ``06 12 34 56 78`` is read; a number written with ``+`` or ``00`` needs none.
    """
    if not number or not str(number).strip():
        return None
    try:
        parsed = phonenumbers.parse(str(number).strip(), region.upper() if region else None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


# --------------------------------------------------------------------------------------------
# the provider client

MESSAGES_PATH: Final = "/2010-04-01/Accounts/{account_sid}/Messages.json"
IDEMPOTENCY_HEADER: Final = "I-Twilio-Idempotency-Token"

#: Provider codes that mean "our set-up is wrong", not "this message is bad": they would fail
#: every message of the wave, so they stop it instead (permanent=False).
#: 20003 authenticate, 20404 account/resource not found, 21212 invalid From, 21603 From missing,
#: 21606 From not SMS-capable, 21659/21660 From not owned by the account, 30007 is *not* here
#: (carrier filtering of one message is that message's problem).
CONFIG_ERROR_CODES: Final[frozenset[int]] = frozenset(
    {20003, 20404, 21212, 21603, 21606, 21659, 21660}
)
_PERMANENT_STATUSES: Final = frozenset({400, 404, 422})
_CONFIG_STATUSES: Final = frozenset({401, 403})
# Statuses after which the provider may or may not have queued the message.
_UNCERTAIN_STATUSES: Final = frozenset({500, 502, 504})

# Anything that looks like a phone number: 6+ digits with the usual separators.
_PHONE_LIKE = re.compile(r"\+?\d[\d\s().\-]{4,}\d")
_MAX_DETAIL = 200


class SmsError(ProviderError):
    """A :class:`ProviderError` with the provider's answer, for logs and metrics (no PII).

    ``uncertain``: the request may have reached the provider (read timeout, dropped connection,
    500/502/504, a 2xx we could not read), so the message may have gone out; the waves stage
    should surface such a contact for review rather than resend it.  ``retry_after`` is the
    provider's ``Retry-After`` in seconds on a 429/503, if it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        status_code: int | None = None,
        code: int | None = None,
        uncertain: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, permanent=permanent, uncertain=uncertain)
        self.status_code = status_code
        self.code = code
        self.retry_after = retry_after


@dataclass(frozen=True)
class SmsSettings:
    """Where and as whom to send.  ``base_url`` e.g. ``https://api.twilio.com``."""

    base_url: str
    account_sid: str
    auth_token: str
    sender: str  # E.164 number (or messaging service / alphanumeric id the provider allows)
    rate_per_second: float | None = None
    timeout: float = 10.0

    def __repr__(self) -> str:  # never print the token
        return (
            f"SmsSettings(base_url={self.base_url!r}, account_sid={self.account_sid!r}, "
            f"auth_token='***', sender={self.sender!r}, rate_per_second={self.rate_per_second!r}, "
            f"timeout={self.timeout!r})"
        )

    @classmethod
    def from_connection(
        cls, conn: Any, *, rate_per_second: float | None = None, timeout: float | None = None
    ) -> SmsSettings:
        """From an Airflow-``Connection``-shaped object (duck-typed; no Airflow import here).

        ``schema`` is the URL scheme (default ``https``), ``host``/``port`` the API host,
        ``login``/``password`` the account SID and auth token; extras: ``from`` (the sender,
        required), optional ``base_url`` (overrides host/port/schema), ``rate_per_second``,
        ``timeout``.  The arguments win over the extras.
        """
        extra = dict(getattr(conn, "extra_dejson", None) or {})
        base_url = extra.get("base_url")
        if not base_url:
            host = (conn.host or "").strip()
            if not host:
                raise ValueError("the SMS connection has no host")
            if "://" in host:
                base_url = host
            else:
                scheme = (conn.schema or "https").strip() or "https"
                port = f":{conn.port}" if conn.port else ""
                base_url = f"{scheme}://{host}{port}"
        sender = extra.get("from") or extra.get("sender")
        if not sender:
            raise ValueError("the SMS connection has no 'from' in its extra")
        if not conn.login or not conn.password:
            raise ValueError("the SMS connection needs login (account SID) and password (token)")
        rate = rate_per_second if rate_per_second is not None else extra.get("rate_per_second")
        wait = timeout if timeout is not None else extra.get("timeout")
        return cls(
            base_url=str(base_url).rstrip("/"),
            account_sid=str(conn.login),
            auth_token=str(conn.password),
            sender=str(sender),
            rate_per_second=float(rate) if rate else None,
            timeout=float(wait) if wait else 10.0,
        )


def _scrub(text: str, *secrets: str) -> str:
    """The provider's message without our recipient, body or anything phone-shaped; short."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "<redacted>")
    text = _PHONE_LIKE.sub("<number>", text)
    text = " ".join(text.split())
    return text[:_MAX_DETAIL] + ("…" if len(text) > _MAX_DETAIL else "")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from APIs, not worth parsing


class SmsClient(Session):
    """One keep-alive HTTP client for a whole wave; use as ``with SmsClient(settings) as sms:``.

    Thread-safe: ``send`` may be called from a pool of threads (the rate limiter and httpx's
    connection pool are shared).  The HTTP client is made on ``__enter__`` (or the first
    ``send``) and closed on ``__exit__``/``close``.  ``transport`` is for tests.
    """

    provider = "sms"

    def __init__(
        self, settings: SmsSettings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.limiter = RateLimiter(settings.rate_per_second)
        self.url = settings.base_url.rstrip("/") + MESSAGES_PATH.format(
            account_sid=settings.account_sid
        )
        self._transport = transport
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    # -- lifecycle

    def open(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                transport = self._transport or httpx.HTTPTransport(
                    # Retries here only cover failing to connect, when nothing was sent.
                    retries=2,
                    limits=httpx.Limits(
                        max_connections=20, max_keepalive_connections=20, keepalive_expiry=30
                    ),
                )
                self._client = httpx.Client(
                    auth=httpx.BasicAuth(self.settings.account_sid, self.settings.auth_token),
                    timeout=httpx.Timeout(self.settings.timeout),
                    headers={"Accept": "application/json", "User-Agent": "dunning-sms/1"},
                    transport=transport,
                    follow_redirects=False,
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- sending

    def send(self, to: str, body: str, reference: str) -> Outcome:
        """Send one text; ``reference`` is the contact's deterministic key (idempotency token).

        Returns ``Outcome("sms", sid, status)``; raises :class:`SmsError` (a ProviderError).
        """
        client = self._client or self.open()
        self.limiter.wait()
        form = {"To": to, "From": self.settings.sender, "Body": body}
        try:
            response = client.post(self.url, data=form, headers={IDEMPOTENCY_HEADER: reference})
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise SmsError(
                f"SMS provider unreachable ({type(exc).__name__})", permanent=False
            ) from None
        except httpx.TransportError as exc:
            # The request may have been received: a read timeout, a dropped connection.
            raise SmsError(
                f"SMS provider did not answer ({type(exc).__name__}); the message may have been sent",
                permanent=False,
                uncertain=True,
            ) from None
        return self._outcome(response, to, body)

    def _outcome(self, response: httpx.Response, to: str, body: str) -> Outcome:
        status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            payload = {}
        if status in (200, 201):
            sid = payload.get("sid")
            if not isinstance(sid, str) or not sid:
                raise SmsError(
                    f"SMS provider accepted (HTTP {status}) but sent no message sid",
                    permanent=False,
                    status_code=status,
                    uncertain=True,
                )
            return Outcome(self.provider, sid, str(payload.get("status") or "queued"))

        raw_code = payload.get("code")
        code = (
            int(raw_code) if isinstance(raw_code, int | str) and str(raw_code).isdigit() else None
        )
        detail = _scrub(str(payload.get("message") or response.reason_phrase or ""), to, body)
        text = f"SMS provider refused the message: HTTP {status}" + (
            f", code {code}" if code is not None else ""
        )
        if detail:
            text += f": {detail}"
        if code in CONFIG_ERROR_CODES or status in _CONFIG_STATUSES:
            permanent = False
            text += " (configuration problem: check the SMS connection)"
        elif status in _PERMANENT_STATUSES:
            permanent = True
        else:  # 429, 5xx and anything unexpected: stop the wave, let a retry resume it
            permanent = False
        raise SmsError(
            text,
            permanent=permanent,
            status_code=status,
            code=code,
            uncertain=status in _UNCERTAIN_STATUSES,
            retry_after=_retry_after(response) if status in (429, 503) else None,
        )


__all__ = [
    "CONFIG_ERROR_CODES",
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "IDEMPOTENCY_HEADER",
    "MESSAGES_PATH",
    "SmsClient",
    "SmsError",
    "SmsSettings",
    "encoding",
    "segments",
    "to_e164",
    "units",
]
