"""Getting a request to the server: the client, retries with backoff and ``Retry-After``, and
the one place where httpx's errors become koala's (see ``errors``)."""

from __future__ import annotations

import random
import ssl
import time
import urllib.request
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import anyio
import httpx

from .answers import raise_for_status
from .errors import KoalaError, NetworkError, ProtocolError, ServiceError, TimeoutError, UsageError
from .text import mask_secrets

__all__ = [
    "RETRY_STATUSES",
    "RetryHook",
    "backoff_delay",
    "make_client",
    "parse_retry_after",
    "redact",
    "send",
    "translate_error",
]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = 30.0
BACKOFF_BASE = 0.5

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
    ceiling: float = min(MAX_RETRY_AFTER, base * 2.0 ** (attempt - 1))
    return ceiling * (0.5 + random.random() / 2)


# httpx's errors, most specific first, and what each becomes.
_TRANSLATIONS: tuple[tuple[type[httpx.HTTPError], type[KoalaError], str], ...] = (
    (httpx.ConnectTimeout, TimeoutError, "timed out connecting to {host} after {timeout:g} s"),
    (httpx.ReadTimeout, TimeoutError, "no data from {host} for {timeout:g} s {where}"),
    (httpx.TimeoutException, TimeoutError, "timed out talking to {host} after {timeout:g} s"),
    (httpx.ProxyError, NetworkError, "proxy error: {reason}"),
    (httpx.ConnectError, NetworkError, "cannot connect to {host}: {reason}"),
    (httpx.UnsupportedProtocol, UsageError, "unsupported URL: {reason}"),
    (httpx.DecodingError, ProtocolError, "cannot decode the answer from {host}: {reason}"),
    (httpx.LocalProtocolError, ProtocolError, "cannot send the request to {host}: {reason}"),
)


def translate_error(exc: httpx.HTTPError, host: str, timeout: float, *, mid_reply: bool = False) -> KoalaError:
    """The one place where httpx's errors become koala's."""
    reason = mask_secrets(str(exc)) or type(exc).__name__
    where = "in the middle of the reply" if mid_reply else "waiting for the reply"
    for kind, error, message in _TRANSLATIONS:
        if isinstance(exc, kind):
            return error(message.format(host=host, timeout=timeout, reason=reason, where=where))
    if mid_reply:
        return NetworkError(f"connection to {host} dropped in the middle of the reply: {reason}")
    return NetworkError(f"connection to {host} failed: {reason}")


def _retryable(exc: httpx.HTTPError) -> bool:
    return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError))


def redact(error: KoalaError, secret: str | None) -> None:
    """A server may echo the key it refused ("invalid key sk-..."): never pass it on."""
    if not secret:
        return
    error.args = tuple(arg.replace(secret, "***") if isinstance(arg, str) else arg for arg in error.args)
    if isinstance(error, ServiceError):
        error.excerpt = error.excerpt.replace(secret, "***")


def make_client(proxy: str | None, timeout: float, url: str) -> httpx.AsyncClient:
    """A client of our own; a proxy URL httpx cannot use is the caller's mistake.

    When no connection this client can make uses TLS -- a plain-HTTP server, no proxy, no
    redirects followed -- it skips loading the CA bundle (tens of milliseconds at start-up,
    the larger part of a short ask to a local server).  Its context trusts no CA at all, so
    were TLS ever attempted it would fail closed, never open.
    """
    verify: ssl.SSLContext | bool = True
    env_proxies = [scheme for scheme in urllib.request.getproxies() if scheme != "no"]
    if proxy is None and url.lower().startswith("http://") and not env_proxies:
        verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        return httpx.AsyncClient(proxy=proxy, timeout=timeout, follow_redirects=False, verify=verify)
    except (ValueError, ImportError, httpx.InvalidURL) as exc:
        raise UsageError(f"cannot use proxy {mask_secrets(proxy or '')!r}: {mask_secrets(str(exc))}") from None


async def send(
    client: httpx.AsyncClient,
    request: httpx.Request,
    host: str,
    timeout: float,
    retries: int,
    on_retry: RetryHook | None,
) -> httpx.Response:
    """Send until an answer that is not worth retrying; only ever before the first byte of a reply."""
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            response = await client.send(request, stream=True)
        except OverflowError:  # a port above 65535 that httpx's URL parser let through
            raise UsageError(f"invalid port in {mask_secrets(str(request.url))!r}") from None
        except httpx.HTTPError as exc:
            error = translate_error(exc, host, timeout)
            if attempt == attempts or not _retryable(exc):
                if attempt > 1:
                    error.args = (f"{error} ({attempt} attempts)",)
                raise error from exc
            delay = backoff_delay(attempt)
            reason = str(error).rstrip(".")
        else:
            challenged = response.headers.get("cf-mitigated", "").lower() == "challenge"
            if response.status_code not in RETRY_STATUSES or attempt == attempts or challenged:
                await raise_for_status(response, host, attempt)
                return response
            after = parse_retry_after(response.headers.get("retry-after"))
            delay = backoff_delay(attempt) if after is None else after
            reason = f"{host} answered HTTP {response.status_code} {response.reason_phrase}".rstrip()
            await response.aclose()
        if on_retry is not None:
            on_retry(f"{reason}; retrying in {delay:.1f} s (attempt {attempt + 1} of {attempts})")
        await anyio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
