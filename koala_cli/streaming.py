"""Chat replies streamed over HTTP: retries, error translation, event parsing.

The machinery every provider shares; a provider only says what to send (``RequestSpec``).
httpx errors become koala errors here and nowhere else (see ``errors``).
"""

from __future__ import annotations

import json
import random
import re
import ssl
import time
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any, ClassVar, cast

import anyio
import httpx

from .base import AsyncGeneratorProvider, ProviderModelMixin
from .errors import (
    BlockedError,
    KoalaError,
    NetworkError,
    ProtocolError,
    ServiceError,
    TimeoutError,
    UsageError,
)
from .models import Message
from .sse import MAX_EVENT_BYTES, SSEDecoder
from .text import excerpt, mask_secrets

__all__ = [
    "HTTPStreamProvider",
    "RequestSpec",
    "backoff_delay",
    "chunk_from_event",
    "parse_retry_after",
    "translate_error",
]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = 30.0
BACKOFF_BASE = 0.5
ERROR_BODY_BYTES = 64 * 1024
EXCERPT_BYTES = 4096

RetryHook = Callable[[str], None]


@dataclass(frozen=True)
class RequestSpec:
    """Exactly what will be sent: shown by ``--dry-run``, sent by ``stream_batches``."""

    url: str
    headers: dict[str, str]
    body: Mapping[str, object]
    method: str = "POST"


_JSON = json.JSONDecoder(strict=False)


def chunk_from_event(data: str) -> str | None:
    """The text an event carries, or None when it carries none (an OpenAI role-only delta).

    A JSON string is the text itself; drifted shapes -- ``{"text"}``, ``{"content"}`` or
    OpenAI's ``choices[0].delta.content`` -- are accepted too.  Anything else is a
    ``ProtocolError``.
    """
    # Fast paths: a JSON string with no escapes is its own text between the quotes; one with
    # escapes is scanned in C, if that scan ends exactly at the closing quote.
    if len(data) > 1 and data[0] == '"' == data[-1]:
        if "\\" not in data and '"' not in data[1:-1]:
            return data[1:-1]
        try:
            scanned: tuple[str, int] = scanstring(data, 1, False)
        except ValueError:
            raise ProtocolError(f"malformed event data: {excerpt(data)}") from None
        if scanned[1] == len(data):
            return scanned[0]
    try:
        value = _JSON.decode(data)
    except ValueError:
        raise ProtocolError(f"malformed event data: {excerpt(data)}") from None
    return _text_of(value, data)


def _text_of(value: object, raw: str) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("text", "content", "output"):
            text = value.get(key)
            if isinstance(text, str):
                return text
        choices = value.get("choices")
        if isinstance(choices, list):
            first = choices[0] if choices else {}
            delta = (first.get("delta") or first.get("message") or {}) if isinstance(first, dict) else None
            if isinstance(delta, dict):
                content = delta.get("content")
                if content is None or isinstance(content, str):
                    return content
    raise ProtocolError(f"unexpected event data: {excerpt(raw)}")


_TITLE = re.compile(r"(?is)<title[^>]*>(.*?)</title>")


def _body_excerpt(body: str, content_type: str) -> str:
    if "html" in content_type:
        title = _TITLE.search(body)
        return f"an HTML page titled {excerpt(title.group(1))!r}" if title else "an HTML page"
    if "json" in content_type:  # an API's error message says more than its JSON
        try:
            value = _JSON.decode(body)
        except ValueError:
            value = None
        error = value.get("error", value) if isinstance(value, dict) else None
        message = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
        if isinstance(message, str) and message:
            return excerpt(message)
    return excerpt(body) or "an empty body"


def _is_challenge(response: httpx.Response, body: str) -> bool:
    headers = response.headers
    if headers.get("cf-mitigated", "").lower() == "challenge":
        return True
    markers = ("Just a moment", "challenge-platform", "cf_chl", "cf-chl", "Attention Required! | Cloudflare")
    if any(marker in body for marker in markers):
        return True
    return "html" in headers.get("content-type", "") and "cf-ray" in headers and response.status_code in (403, 503)


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


def _host(url: httpx.URL) -> str:
    return url.netloc.decode("ascii", "replace").rpartition("@")[2] or str(url)


def translate_error(exc: httpx.HTTPError, host: str, timeout: float, *, mid_reply: bool = False) -> KoalaError:
    """The one place where httpx's errors become koala's."""
    reason = mask_secrets(str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return TimeoutError(f"timed out connecting to {host} after {timeout:g} s")
    if isinstance(exc, httpx.ReadTimeout):
        what = "in the middle of the reply" if mid_reply else "waiting for the reply"
        return TimeoutError(f"no data from {host} for {timeout:g} s {what}")
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(f"timed out talking to {host} after {timeout:g} s")
    if isinstance(exc, httpx.ProxyError):
        return NetworkError(f"proxy error: {reason}")
    if isinstance(exc, httpx.ConnectError):
        return NetworkError(f"cannot connect to {host}: {reason}")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return UsageError(f"unsupported URL: {reason}")
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError(f"cannot decode the answer from {host}: {reason}")
    if isinstance(exc, httpx.LocalProtocolError):
        return ProtocolError(f"cannot send the request to {host}: {reason}")
    if mid_reply:
        return NetworkError(f"connection to {host} dropped in the middle of the reply: {reason}")
    return NetworkError(f"connection to {host} failed: {reason}")


def _retryable(exc: httpx.HTTPError) -> bool:
    return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError))


class HTTPStreamProvider(AsyncGeneratorProvider, ProviderModelMixin):
    """A provider that POSTs JSON and reads the reply as an event stream.

    Subclasses say what to send in ``request_spec``; retries, timeouts, error translation
    and event parsing are shared.
    """

    #: The environment variable a front end may take this provider's key from.
    api_key_env: ClassVar[str | None] = None

    @classmethod
    def request_spec(
        cls,
        model: str,
        messages: Sequence[Message],
        *,
        base_url: str | None = None,
        web_search: bool = False,
        api_key: str | None = None,
    ) -> RequestSpec:
        """The request for a conversation; pure, so ``--dry-run`` can show it."""
        raise NotImplementedError

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: Sequence[Message],
        proxy: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[str]:
        """Send the conversation; yield the reply's text chunks as they arrive.

        Keyword options: ``client`` (a caller-owned ``httpx.AsyncClient``, never closed here),
        ``base_url``, ``timeout`` (seconds to connect or between bytes), ``web_search``,
        ``api_key``, ``retries`` and ``on_retry`` (called with a one-line notice).
        """
        async with aclosing(cls.stream_batches(model, messages, proxy, **kwargs)) as batches:
            async for batch in batches:
                for chunk in batch:
                    yield chunk

    @classmethod
    async def stream_batches(
        cls,
        model: str,
        messages: Sequence[Message],
        proxy: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        web_search: bool = False,
        api_key: str | None = None,
        retries: int = 3,
        on_retry: RetryHook | None = None,
    ) -> AsyncGenerator[list[str], None]:
        """Like ``create_async_generator``, but one list of chunks per network read.

        Writers that flush once per list keep every chunk as fresh as its bytes while paying
        for one system call per read instead of one per chunk.
        """
        spec = cls.request_spec(model, messages, base_url=base_url, web_search=web_search, api_key=api_key)
        async with AsyncExitStack() as stack:
            callers_client = client is not None  # its proxy is its own business, not ours
            if client is None:
                client = await stack.enter_async_context(_client(proxy, timeout, spec.url))
            try:
                # Our own encoding: ASCII escapes are quicker for a long history, and a lone
                # surrogate (legal in a JSON string) becomes its escape instead of an error.
                body = json.dumps(spec.body, separators=(",", ":"))
                request = client.build_request(
                    spec.method,
                    spec.url,
                    content=body.encode("ascii"),
                    headers=spec.headers,
                    timeout=timeout,
                )
            except httpx.InvalidURL as exc:
                raise UsageError(f"invalid URL {mask_secrets(spec.url)!r}: {exc}") from None
            host = _host(request.url)
            if proxy and not callers_client:
                host = f"{host} (via proxy {mask_secrets(proxy)})"
            try:
                response = await _send(client, request, host, timeout, retries, on_retry)
                stack.push_async_callback(response.aclose)
                started = False
                try:
                    async for batch in _answer_batches(response, host, timeout):
                        started = True
                        yield batch
                except httpx.HTTPError as exc:
                    raise translate_error(exc, host, timeout, mid_reply=started) from exc
            except KoalaError as exc:
                _redact(exc, api_key)
                raise

    @staticmethod
    async def _parse_event_stream(response: httpx.Response) -> AsyncIterator[str]:
        """The text chunks of an event-stream body, in order, until ``[DONE]`` or its end."""
        async for batch in _event_batches(response):
            for chunk in batch:
                yield chunk


def _redact(error: KoalaError, secret: str | None) -> None:
    """A server may echo the key it refused ("invalid key sk-..."): never pass it on."""
    if not secret:
        return
    error.args = tuple(arg.replace(secret, "***") if isinstance(arg, str) else arg for arg in error.args)
    if isinstance(error, ServiceError):
        error.excerpt = error.excerpt.replace(secret, "***")


def _client(proxy: str | None, timeout: float, url: str) -> httpx.AsyncClient:
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


async def _send(
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
                await _raise_for_status(response, host, attempt)
                return response
            after = parse_retry_after(response.headers.get("retry-after"))
            delay = backoff_delay(attempt) if after is None else after
            reason = f"{host} answered HTTP {response.status_code} {response.reason_phrase}".rstrip()
            await response.aclose()
        if on_retry is not None:
            on_retry(f"{reason}; retrying in {delay:.1f} s (attempt {attempt + 1} of {attempts})")
        await anyio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _blocked(host: str, answered: str, status: int, body: str, attempts: int) -> BlockedError:
    return BlockedError(
        f"{host} answered {answered} with a Cloudflare bot challenge instead of a reply; "
        "try --proxy, an API key (KOALA_API_KEY), or --base-url of a compatible server",
        status=status,
        excerpt=excerpt(body),
        attempts=attempts,
    )


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    body = bytearray()
    async with aclosing(cast("AsyncGenerator[bytes, None]", response.aiter_bytes())) as pieces:
        async for piece in pieces:
            body += piece
            if len(body) > limit:
                break
    return bytes(body)


async def _raise_for_status(response: httpx.Response, host: str, attempts: int) -> None:
    """A non-2xx answer becomes a ``ServiceError`` with its status and a short excerpt."""
    status = response.status_code
    if 200 <= status < 300:
        return
    try:
        body = (await _read_capped(response, ERROR_BODY_BYTES)).decode("utf-8", "replace")
    except httpx.HTTPError:
        body = ""
    finally:
        await response.aclose()
    content_type = response.headers.get("content-type", "")
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    status_text = f"HTTP {status} {response.reason_phrase}".rstrip()
    if _is_challenge(response, body):
        raise _blocked(host, f"{status_text}{tried}", status, body, attempts)
    where = response.headers.get("location")
    detail = (
        f"a redirect to {mask_secrets(where)}" if where and 300 <= status < 400 else _body_excerpt(body, content_type)
    )
    raise ServiceError(
        f"{host} answered {status_text}{tried}: {detail}", status=status, excerpt=excerpt(body), attempts=attempts
    )


async def _answer_batches(response: httpx.Response, host: str, timeout: float) -> AsyncGenerator[list[str], None]:
    """Chunks of a 2xx answer, whatever its content type, or the ``ProtocolError`` it deserves."""
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("text/event-stream", ""):
        async for batch in _event_batches(response):
            yield batch
        return
    raw = await _read_capped(response, MAX_EVENT_BYTES)
    if len(raw) > MAX_EVENT_BYTES:
        kind = "a JSON body" if "json" in content_type else content_type
        raise ProtocolError(f"{host} answered {kind} larger than {MAX_EVENT_BYTES} bytes")
    body = raw.decode("utf-8", "replace")
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            value = _JSON.decode(body)
        except ValueError:
            raise ProtocolError(f"{host} answered malformed JSON: {excerpt(body)}") from None
        text = _text_of(value, body) if isinstance(value, (dict, str)) else None
        if text is None:
            raise ProtocolError(f"{host} answered JSON without a reply text: {excerpt(body)}")
        if text:
            yield [text]
        return
    raise _not_a_stream(response, body, host)


async def _event_batches(response: httpx.Response) -> AsyncGenerator[list[str], None]:
    decoder = SSEDecoder()
    seen = False  # any event at all; a body without one is not an event stream
    head = bytearray()  # the start of the body, to say what came instead
    async with aclosing(cast("AsyncGenerator[bytes, None]", response.aiter_bytes())) as pieces:
        async for piece in pieces:
            events = decoder.feed(piece)
            if not seen:
                seen = bool(events)
                head += piece[: EXCERPT_BYTES - len(head)]
            chunks, end, error = _chunks(events)
            if chunks:
                yield chunks
            if error is not None:
                raise error
            if end:
                return
    if not seen:
        raise _not_a_stream(response, bytes(head).decode("utf-8", "replace"))
    decoder.close()


def _not_a_stream(response: httpx.Response, body: str, host: str | None = None) -> KoalaError:
    """A 2xx answer that is no event stream: a challenge page, HTML, or something else."""
    host = host or _host(response.request.url)
    if _is_challenge(response, body):
        return _blocked(host, f"HTTP {response.status_code}", response.status_code, body, 1)
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    what = _body_excerpt(body, content_type or ("html" if "<html" in body.lower() else ""))
    return ProtocolError(f"{host} answered {content_type or 'no content type'} instead of an event stream: {what}")


def _chunks(events: list[str]) -> tuple[list[str], bool, ProtocolError | None]:
    """The non-empty texts of a run of events, whether the stream ended, and why if badly.

    A bad event ends the stream, but the good chunks before it in the same read are still
    delivered: nothing that arrived is lost.
    """
    chunks: list[str] = []
    for data in events:
        if data == "[DONE]":
            return chunks, True, None
        try:
            text = chunk_from_event(data)
        except ProtocolError as exc:
            return chunks, True, exc
        if text:
            chunks.append(text)
    return chunks, False, None
