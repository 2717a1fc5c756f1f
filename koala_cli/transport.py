"""Getting a request to the server: the client (its TLS trust, its proxy, its idle timeout),
retries with backoff and ``Retry-After``, and the one place where httpx's errors become
koala's (see ``errors``).

Not retried, because a retry cannot help: a TLS certificate koala cannot trust, a host name
that does not exist, a proxy's refusal (407, or squid's 403), an unusable proxy URL.
"""

from __future__ import annotations

import errno
import os
import random
import re
import socket
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from email.utils import parsedate_to_datetime

import anyio
import httpx

from .answers import host_of, raise_for_status
from .errors import KoalaError, NetworkError, ProtocolError, ServiceError, TimeoutError, UsageError
from .proxy import choose_proxy
from .stopclock import stop_aware
from .text import mask_secrets, mask_url, terminal_safe

__all__ = [
    "RETRY_STATUSES",
    "Pacer",
    "RetryHook",
    "backoff_delay",
    "exchange",
    "finish_body",
    "make_client",
    "parse_retry_after",
    "proxy_of",
    "redact",
    "send",
    "translate_error",
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

TRUST_HINT = "to trust a private CA, point SSL_CERT_FILE or SSL_CERT_DIR at it"
_NO_SUCH_NAME = frozenset(
    code for code in (getattr(socket, name, None) for name in ("EAI_NONAME", "EAI_NODATA")) if code is not None
)
_STATUS = re.compile(r"(\d{3})\b")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it came from: causes, contexts and the members of exception groups."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < 64:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _refused_by_proxy(exc: httpx.HTTPError) -> bool:
    """A tunnel the proxy refused with a 4xx status (407: credentials; 403: its rules)."""
    status = _STATUS.match(str(exc)) if isinstance(exc, httpx.ProxyError) else None
    return status is not None and 400 <= int(status[1]) < 500


def _why(exc: httpx.HTTPError, host: str) -> tuple[str, bool] | None:
    """A message for failures that a retry cannot mend, or that httpx words badly, and
    whether a retry may help; None when the generic translation says it well."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            what = cause.verify_message or cause.reason or str(cause)
            return f"cannot verify the TLS certificate of {host}: {terminal_safe(str(what))} ({TRUST_HINT})", False
        if isinstance(cause, socket.gaierror) and cause.errno in _NO_SUCH_NAME:
            return f"cannot connect to {host}: no such host ({cause.strerror})", False
        if isinstance(cause, OSError) and cause.errno in (errno.EMFILE, errno.ENFILE):
            return f"cannot connect to {host}: {cause.strerror} (the limit on open files)", True
    if isinstance(exc, httpx.ConnectError) and "All connection attempts failed" in str(exc):
        for cause in _causes(exc):
            if isinstance(cause, OSError) and cause.strerror:
                return f"cannot connect to {host}: {cause.strerror}", True
    return None


def translate_error(
    exc: httpx.HTTPError, host: str, timeout: float, *, mid_reply: bool = False, proxy: str | None = None
) -> KoalaError:
    """The one place where httpx's errors become koala's."""
    reason = terminal_safe(mask_secrets(str(exc))) or type(exc).__name__
    if isinstance(exc, httpx.ProxyError) and not mid_reply:
        named = f"proxy {mask_url(proxy)}" if proxy else "the proxy"
        verb = "refused" if _refused_by_proxy(exc) else "failed"
        return NetworkError(f"{named} {verb}: {reason}")
    special = None if mid_reply else _why(exc, host)
    if special is not None:
        return NetworkError(special[0])
    where = "in the middle of the reply" if mid_reply else "waiting for the reply"
    for kind, error, message in _TRANSLATIONS:
        if isinstance(exc, kind):
            return error(message.format(host=host, timeout=timeout, reason=reason, where=where))
    if mid_reply:
        return NetworkError(f"connection to {host} dropped in the middle of the reply: {reason}")
    return NetworkError(f"connection to {host} failed: {reason}")


def _retryable(exc: httpx.HTTPError, host: str) -> bool:
    if not isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)):
        return False
    if _refused_by_proxy(exc):
        return False
    special = _why(exc, host)
    return special is None or special[1]


def redact(error: KoalaError, secret: str | None) -> None:
    """A server may echo the key it refused ("invalid key sk-..."): never pass it on."""
    if not secret:
        return
    error.args = tuple(arg.replace(secret, "***") if isinstance(arg, str) else arg for arg in error.args)
    if isinstance(error, ServiceError):
        error.excerpt = error.excerpt.replace(secret, "***")


# --- the client -------------------------------------------------------------------------------

_CONTEXTS: dict[tuple[str, str], ssl.SSLContext] = {}
_PROXIES: weakref.WeakKeyDictionary[httpx.AsyncClient, str] = weakref.WeakKeyDictionary()


def tls_context() -> ssl.SSLContext:
    """Verification always on, trusting ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` when set (both,
    as OpenSSL does), else certifi's bundle; made once per setting, shared by every client.

    A setting naming something unusable is a ``UsageError`` that names the variable; running
    out of file descriptors while reading it is a ``NetworkError``, like any failure to connect.
    """
    # OpenSSL's own settings, which every TLS client in the process honours (httpx with
    # trust_env too): read where the context is made, not a koala setting the CLI owns.
    environ = os.environ  # noqa: TID251
    cafile, capath = environ.get("SSL_CERT_FILE", ""), environ.get("SSL_CERT_DIR", "")
    key = (cafile, capath)
    context = _CONTEXTS.get(key)
    if context is not None:
        return context
    if capath and not os.path.isdir(capath):
        raise UsageError(f"SSL_CERT_DIR={terminal_safe(capath)!r} is not a folder of certificates")
    if not cafile and not capath:
        import certifi

        cafile = certifi.where()
    try:
        context = ssl.create_default_context(cafile=cafile or None, capath=capath or None)
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
            raise NetworkError(f"cannot read the trusted certificates: {exc.strerror}") from None
        variable = "SSL_CERT_FILE" if key[0] else "the CA bundle"
        why = exc.strerror or getattr(exc, "reason", None) or str(exc)
        if isinstance(exc, ssl.SSLError):
            why = f"no PEM certificate in it ({exc.reason or exc})"
        raise UsageError(f"{variable}={terminal_safe(cafile)!r} cannot be used: {terminal_safe(str(why))}") from None
    _CONTEXTS[key] = context
    return context


def make_client(
    proxy: str | None, timeout: float, url: str, *, max_connections: int | None = None
) -> httpx.AsyncClient:
    """A client of our own for requests to ``url``: through ``proxy``, or the environment's,
    unless ``NO_PROXY`` names the host; a proxy URL httpx cannot use is the caller's mistake.

    One client is one connection pool and one TLS context (the CA bundle is loaded once):
    ``koala batch`` shares one among its jobs, with ``max_connections`` = its concurrency,
    and ``koala chat`` one among its turns.

    When no connection this client can make uses TLS -- a plain-HTTP server, no proxy or a
    plain-HTTP one, no redirects followed -- it skips loading the CA bundle (tens of
    milliseconds at start-up, the larger part of a short ask to a local server).  Its context
    trusts no CA at all, so were TLS ever attempted it would fail closed, never open.

    Reads time out after ``timeout`` seconds of silence, not counting time the process spent
    stopped (Ctrl-Z): see ``stopclock``.
    """
    chosen = choose_proxy(url, proxy)
    tls = url.lower().startswith("https://") or (chosen or "").lower().startswith("https://")
    verify = tls_context() if tls else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections or 20)
        transport = httpx.AsyncHTTPTransport(verify=verify, proxy=chosen, limits=limits)
        client = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)
    except (ValueError, ImportError, httpx.InvalidURL) as exc:
        raise UsageError(f"cannot use proxy {mask_url(chosen or '')!r}: {mask_secrets(str(exc))}") from None
    except OSError as exc:
        raise NetworkError(f"cannot make an HTTP client: {exc.strerror or exc}") from None
    stop_aware(transport)
    if chosen:
        _PROXIES[client] = chosen
    return client


def proxy_of(client: httpx.AsyncClient) -> str | None:
    """The proxy a client made by ``make_client`` goes through (None: direct, or not ours)."""
    return _PROXIES.get(client)


_PROXY_SOFTWARE = re.compile(r"(?i)proxy|squid")


def _proxy_refusal(response: httpx.Response, proxy: str | None) -> NetworkError | None:
    """An answer a forward proxy wrote itself instead of passing the server's on: a 407 (only
    a proxy sends it); while going through one, squid's error page (``X-Squid-Error``), or an
    error whose ``Server`` is proxy software and that has no ``Via`` -- a proxy marks what it
    passes on with ``Via`` (tinyproxy's own 403 has none)."""
    status = response.status_code
    headers = response.headers
    squid = headers.get("x-squid-error", "") if proxy else ""
    own = bool(proxy) and "via" not in headers and bool(_PROXY_SOFTWARE.search(headers.get("server", "")))
    if status != 407 and not squid and not (own and status >= 400):
        return None
    named = f"proxy {mask_url(proxy)}" if proxy else "the proxy"
    verb = "refused" if 400 <= status < 500 else "failed"
    code = f" ({terminal_safe(squid.split()[0])})" if squid.split() else ""
    answered = terminal_safe(f"{status} {response.reason_phrase}".rstrip())
    return NetworkError(f"{named} {verb}: {answered}{code}")


async def send(
    client: httpx.AsyncClient,
    request: httpx.Request,
    host: str,
    timeout: float,
    retries: int,
    on_retry: RetryHook | None,
    pacer: Pacer | None = None,
) -> httpx.Response:
    """Send until an answer that is not worth retrying; only ever before the first byte of a reply.

    With a ``pacer`` shared by many requests, every attempt waits for its turn, and a 429 or
    503 with ``Retry-After`` pauses them all (one notice, from the pacer)."""
    attempts = retries + 1
    proxy = proxy_of(client)
    for attempt in range(1, attempts + 1):
        if pacer is not None:
            await pacer.ready()
        try:
            response = await client.send(request, stream=True)
        except OverflowError:  # a port above 65535 that httpx's URL parser let through
            raise UsageError(f"invalid port in {mask_secrets(str(request.url))!r}") from None
        except httpx.HTTPError as exc:
            error = translate_error(exc, host, timeout, proxy=proxy)
            if attempt == attempts or not _retryable(exc, host):
                if attempt > 1:
                    error.args = (f"{error} ({attempt} attempts)",)
                raise error from exc
            delay = backoff_delay(attempt)
            reason = str(error).rstrip(".")
        except OSError as exc:  # below httpx: out of file descriptors, say
            raise NetworkError(f"cannot connect to {host}: {exc.strerror or exc}") from None
        else:
            refusal = _proxy_refusal(response, proxy)
            challenged = response.headers.get("cf-mitigated", "").lower() == "challenge"
            if response.status_code not in RETRY_STATUSES or attempt == attempts or challenged:
                if refusal is not None:
                    await response.aclose()
                    raise refusal
                await raise_for_status(response, host, attempt)
                response.stream = _Reusable(response.stream)
                return response
            after = parse_retry_after(response.headers.get("retry-after"))
            delay = backoff_delay(attempt) if after is None else after
            reason = (
                str(refusal) if refusal else f"{host} answered HTTP {response.status_code} {response.reason_phrase}"
            )
            reason = reason.rstrip()
            await response.aclose()
            if pacer is not None and after is not None and response.status_code in (429, 503):
                pacer.pause(after, reason)  # the service asks the whole client to wait
                continue
        if on_retry is not None:
            on_retry(f"{reason}; retrying in {delay:.1f} s (attempt {attempt + 1} of {attempts})")
        await anyio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


@asynccontextmanager
async def exchange(
    method: str,
    url: str,
    headers: Mapping[str, str],
    content: bytes | None = None,
    *,
    proxy: str | None,
    client: httpx.AsyncClient | None,
    timeout: float,
    retries: int,
    on_retry: RetryHook | None,
    secrets: Sequence[str | None] = (),
    pacer: Pacer | None = None,
) -> AsyncIterator[tuple[httpx.Response, str]]:
    """Send a request (with retries) and hold its 2xx response open; yields it and the host
    name for messages.  Every koala error raised here or in the body has ``secrets`` masked."""
    async with AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(make_client(proxy, timeout, url))
        try:
            request = client.build_request(method, url, content=content, headers=headers, timeout=timeout)
        except httpx.InvalidURL as exc:
            raise UsageError(f"invalid URL {mask_url(url)!r}: {mask_secrets(str(exc))}") from None
        host = host_of(request.url)
        via = proxy_of(client)  # None for a caller's client: its proxy is its own business
        if via:
            host = f"{host} (via proxy {mask_url(via)})"
        try:
            response = await send(client, request, host, timeout, retries, on_retry, pacer)
            stack.push_async_callback(response.aclose)
            yield response, host
        except KoalaError as exc:
            for secret in secrets:
                redact(exc, secret)
            raise


class _Reusable(httpx.AsyncByteStream):
    """A response body that can be read to its end after its reader stopped early (at an
    event stream's ``[DONE]``), so that its connection goes back to the pool."""

    def __init__(self, stream: httpx.SyncByteStream | httpx.AsyncByteStream) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream
        self._pieces: AsyncIterator[bytes] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._pieces = self._stream.__aiter__()
        async for piece in self._pieces:  # left suspended, not closed, when our reader stops
            yield piece

    async def drain(self, limit: int = 64 * 1024, seconds: float = 0.25) -> None:
        if self._pieces is None:
            return
        with anyio.move_on_after(seconds):
            async for piece in self._pieces:
                limit -= len(piece)
                if limit < 0:
                    break

    async def aclose(self) -> None:
        await self._stream.aclose()


async def finish_body(response: httpx.Response) -> None:
    """After a complete reply: read what is left of the body (the end of the chunked framing,
    a few bytes), briefly and boundedly, so its keep-alive connection can serve the next
    request instead of being closed."""
    if isinstance(response.stream, _Reusable):
        await response.stream.drain()


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
