"""When to try again: ``Retry-After``, exponential backoff with jitter, and the ``Pacer``
that spaces the starts of many requests of one client (``--rate``) and pauses them all when
the service says so."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import anyio

__all__ = [
    "BACKOFF_BASE",
    "MAX_RETRY_AFTER",
    "RETRY_STATUSES",
    "Pacer",
    "RetryHook",
    "backoff_delay",
    "parse_retry_after",
]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = 30.0
BACKOFF_BASE = 0.5
MAX_BACKOFF_EXPONENT = 16  # 0.5 s * 2**16 is far past the cap already

RetryHook = Callable[[str], None]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment: float = parsedate_to_datetime(value).timestamp()
            seconds = moment - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def backoff_delay(attempt: int, base: float = BACKOFF_BASE) -> float:
    """Exponential backoff with full jitter in its upper half: attempt 1 waits base/2..base."""
    ceiling: float = min(MAX_RETRY_AFTER, base * 2.0 ** min(attempt - 1, MAX_BACKOFF_EXPONENT))
    return ceiling * (0.5 + random.random() / 2)


class Pacer:
    """Request starts shared by many requests of one client: spaced ``interval`` seconds
    apart (``--rate``), and all paused when the service says ``Retry-After`` -- with one
    notice for the pause, not one per request."""

    def __init__(self, interval: float | None = None, notify: RetryHook | None = None) -> None:
        self.interval = interval
        self.notify = notify
        self._next = 0.0  # the earliest start of the next request
        self._resume = 0.0  # the end of a pause
        self._turn = anyio.Lock()

    async def ready(self) -> None:
        """Wait for this request's turn (first come, first served)."""
        async with self._turn:
            while (wait := max(self._next, self._resume) - anyio.current_time()) > 0:
                await anyio.sleep(wait)
            if self.interval:
                self._next = anyio.current_time() + self.interval

    def pause(self, seconds: float, reason: str) -> None:
        """No request starts for ``seconds``; say so unless a pause is already under way."""
        now = anyio.current_time()
        if now + seconds <= self._resume:
            return
        if self._resume <= now and self.notify is not None:
            self.notify(f"{reason}; pausing every request for {seconds:.1f} s (Retry-After)")
        self._resume = now + seconds
