"""Getting a request to the server: the client (its TLS trust, its proxy, its idle timeout),
sending with retries (when to retry: ``backoff``; what a failure means: ``httperrors``), and
keeping a finished reply's connection for the next request.
"""

from __future__ import annotations

import errno
import os
import ssl
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import httpx

from .answers import host_of, raise_for_status
from .backoff import RETRY_STATUSES, Pacer, RetryHook, backoff_delay, parse_retry_after
from .errors import KoalaError, NetworkError, UsageError
from .httperrors import proxy_refusal, redact, retryable, translate_error
from .proxy import choose_proxy
from .stopclock import stop_aware
from .text import mask_secrets, mask_url, terminal_safe

__all__ = ["exchange", "finish_body", "make_client", "proxy_of", "send", "tls_context"]

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
            if attempt == attempts or not retryable(exc, host):
                if attempt > 1:
                    error.args = (f"{error} ({attempt} attempts)",)
                raise error from exc
            delay = backoff_delay(attempt)
            reason = str(error).rstrip(".")
        except OSError as exc:  # below httpx: out of file descriptors, say
            raise NetworkError(f"cannot connect to {host}: {exc.strerror or exc}") from None
        else:
            refusal = proxy_refusal(response, proxy)
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

    def __aiter__(self) -> AsyncIterator[bytes]:
        # the stream's own iterator, not a generator of ours around it: left suspended, not
        # closed, when our reader stops, and no second generator for the GC to finalise
        self._pieces = self._stream.__aiter__()
        return self._pieces

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
