"""An HTTP answer to text batches, or the error it deserves.

A non-2xx status is a ``ServiceError`` (a ``BlockedError`` for a Cloudflare challenge); a 2xx
answer that is no event stream is a ``ProtocolError`` naming what came instead.  httpx's own
errors are not translated here but where the request is sent (``transport``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import cast

import httpx

from .errors import BlockedError, KoalaError, ProtocolError, ServiceError
from .events import JSON, EventReader, json_of, text_of
from .sse import MAX_EVENT_BYTES, SSEDecoder
from .text import clip, excerpt, mask_secrets

__all__ = ["ERROR_BODY_BYTES", "answer_batches", "event_batches", "host_of", "raise_for_status"]

ERROR_BODY_BYTES = 64 * 1024
EXCERPT_BYTES = 4096

_TITLE_OPEN = re.compile(r"(?i)<title")
_TITLE_CLOSE = re.compile(r"(?i)</title>")


def _title(body: str) -> str | None:
    """What ``<title[^>]*>(.*?)</title>`` would find, in linear time: that search restarts at
    every ``<title`` and reads to the end from each when no ``</title>`` follows (64 kB of
    ``<title>`` took seconds).  A later ``<title`` cannot do better: its ``>`` is no earlier."""
    opened = _TITLE_OPEN.search(body)
    gt = body.find(">", opened.end()) if opened else -1
    closed = _TITLE_CLOSE.search(body, gt + 1) if gt >= 0 else None
    return body[gt + 1 : closed.start()] if closed else None


def host_of(url: httpx.URL) -> str:
    """``host[:port]`` of a URL, without credentials, for messages."""
    return url.netloc.decode("ascii", "replace").rpartition("@")[2] or str(url)


def _body_excerpt(body: str, content_type: str) -> str:
    if "html" in content_type:
        title = _title(body)
        return f"an HTML page titled {excerpt(title)!r}" if title is not None else "an HTML page"
    if "json" in content_type:  # an API's error message says more than its JSON
        try:
            value = JSON.decode(body)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply to read
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


async def raise_for_status(response: httpx.Response, host: str, attempts: int) -> None:
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
    status_text = f"HTTP {status} {clip(response.reason_phrase)}".rstrip()
    if _is_challenge(response, body):
        raise _blocked(host, f"{status_text}{tried}", status, body, attempts)
    where = response.headers.get("location")
    detail = (
        f"a redirect to {clip(mask_secrets(where))}"
        if where and 300 <= status < 400
        else _body_excerpt(body, content_type)
    )
    raise ServiceError(
        f"{host} answered {status_text}{tried}: {detail}", status=status, excerpt=excerpt(body), attempts=attempts
    )


async def answer_batches(
    response: httpx.Response, host: str, reader: EventReader | None = None
) -> AsyncGenerator[list[str], None]:
    """Chunks of a 2xx answer, whatever its content type, or the error it deserves."""
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("text/event-stream", ""):
        async for batch in event_batches(response, reader):
            yield batch
        return
    raw = await _read_capped(response, MAX_EVENT_BYTES)
    if len(raw) > MAX_EVENT_BYTES:
        kind = "a JSON body" if "json" in content_type else content_type
        raise ProtocolError(f"{host} answered {kind} larger than {MAX_EVENT_BYTES} bytes")
    body = raw.decode("utf-8", "replace")
    if content_type == "application/json" or content_type.endswith("+json"):
        value = json_of(body, f"{host} answered malformed JSON", f"{host} answered JSON nested too deeply")
        text = text_of(value, body) if isinstance(value, (dict, str)) else None
        if text is None:
            raise ProtocolError(f"{host} answered JSON without a reply text: {excerpt(body)}")
        if text:
            yield [text]
        return
    raise _not_a_stream(response, body, host)


async def event_batches(response: httpx.Response, reader: EventReader | None = None) -> AsyncGenerator[list[str], None]:
    """The text chunks of an event-stream body, one list per network read.

    ``reader`` (a fresh one if not given) is left knowing how the reply ended.
    """
    reader = reader or EventReader()
    decoder = SSEDecoder()
    seen = False  # any event at all; a body without one is not an event stream
    head = bytearray()  # the start of the body, to say what came instead
    async with aclosing(cast("AsyncGenerator[bytes, None]", response.aiter_bytes())) as pieces:
        async for piece in pieces:
            events = decoder.feed(piece)
            if not seen:
                seen = bool(events)
                head += piece[: EXCERPT_BYTES - len(head)]
            chunks, end, error = reader.read(events)
            if chunks:
                yield chunks
            if error is not None:
                raise error
            if end:
                return
    if not seen:
        raise _not_a_stream(response, bytes(head).decode("utf-8", "replace"))
    decoder.close()
    error = reader.end()
    if error is not None:
        raise error


def _not_a_stream(response: httpx.Response, body: str, host: str | None = None) -> KoalaError:
    """A 2xx answer that is no event stream: a challenge page, HTML, or something else."""
    host = host or host_of(response.request.url)
    if _is_challenge(response, body):
        return _blocked(host, f"HTTP {response.status_code}", response.status_code, body, 1)
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "text/event-stream":
        lines = [line for line in body.replace("\r", "\n").split("\n") if line]
        if not lines:
            return ProtocolError(f"{host} ended the reply without sending anything")
        if all(line[0] == ":" for line in lines):
            return ProtocolError(f"{host} ended the reply without sending any event, only comments")
    what = _body_excerpt(body, content_type or ("html" if "<html" in body.lower() else ""))
    named = clip(content_type) or "no content type"
    return ProtocolError(f"{host} answered {named} instead of an event stream: {what}")
