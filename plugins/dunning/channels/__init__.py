"""Channel adapters: how a rendered message leaves Dunning (email, SMS, letters, call queue).

Each adapter talks to a real provider protocol (SMTP, a Twilio-style REST API, S3 for the print
vendor and the dialer) and reports one ``Outcome`` per message; the waves stage owns the
exactly-once bookkeeping around it.  Core package: no Airflow import -- the Airflow side turns
connections into the settings these take.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self


class ProviderError(RuntimeError):
    """A provider refused or failed one message.

    ``permanent``: retrying cannot help (bad address, rejected content), so the message is
    ``failed``; otherwise (timeouts, 429, 5xx) the whole wave stops and Airflow's retry resumes
    it, and the message stays unclaimed -- unless ``uncertain``: the provider may have taken
    it (a timeout after the request went out), so it goes to review, not to a resend.
    """

    def __init__(self, message: str, *, permanent: bool, uncertain: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.uncertain = uncertain


class ChannelOutage(RuntimeError):
    """The provider refused message after message: the channel is stopped, not the addresses
    blamed.  The message carries counts only, never a recipient."""


class Session(ABC):
    """A provider session as a context manager: ``open()`` on entry, ``close()`` on exit."""

    @abstractmethod
    def open(self) -> Any:
        """Connect (or check the connection) before anything is claimed."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; safe to call twice."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class Outcome:
    """What the provider said about one message it accepted."""

    provider: str
    provider_id: str
    status: str = "accepted"  # the provider's first delivery status


class RateLimiter:
    """At most ``per_second`` calls per second, smoothly: a token bucket that starts with one
    token, so even the first second of a wave stays under the provider's limit.

    Providers throttle per account; going over earns 429s or a suspended sender.  ``None`` or 0
    means no limit (the local test servers).
    """

    def __init__(self, per_second: float | None) -> None:
        self.per_second = per_second or 0.0
        self._lock = threading.Lock()
        self._tokens = min(1.0, self.per_second)
        self._last = time.monotonic()

    def wait(self) -> None:
        if self.per_second <= 0:
            return
        with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(
                    self.per_second, self._tokens + (now - self._last) * self.per_second
                )
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                time.sleep((1 - self._tokens) / self.per_second)
