"""Event data to reply text (stdlib only): what each event of a reply carries.

A koala.sh event is a JSON string; drifted shapes -- ``{"text"}``, ``{"content"}``, or
OpenAI's ``choices[0].delta.content`` -- are accepted too.  ``[DONE]`` ends a reply.  A
failure the server reports inside the stream -- ``{"error": ...}`` data, or an SSE
``event: error`` -- is a ``ServiceError``.  OpenAI-style streams also say why they ended
(``finish_reason``); one that ends without saying so was cut off (see ``EventReader``).

Speed: a reply is ~100,000 events, so the common ones skip the per-event Python -- a JSON
string without escapes is sliced, and a run of plain OpenAI deltas (``_PLAIN_DELTA``) is
matched and decoded in C a network read at a time; everything else takes the general path,
and both read alike (tests/unit/test_events_fast.py).
"""

from __future__ import annotations

import functools
import json
import re
from json.decoder import scanstring  # type: ignore[attr-defined]

from .errors import KoalaError, NetworkError, ProtocolError, ServiceError
from .sse import NamedEvent
from .text import excerpt

__all__ = ["JSON", "EventReader", "chunk_from_event", "error_message", "json_of", "text_of"]

#: A lenient decoder: control characters inside strings are accepted, as servers send them.
JSON = json.JSONDecoder(strict=False)


_TEXT = r'([^"\\\n]*(?:\\.[^"\\\n]*)*)'  # a JSON string's escaped characters (escapes checked later)
_FAST_RUN = 16  # fewer events than this (a short reply) are read one by one: no regex to compile


def _plain_delta() -> str:
    """An OpenAI delta event that carries text and nothing else koala reads, as a regex.

    Only valid JSON matches, and only members that ``EventReader`` ignores surround the text:
    no top-level ``text``/``content``/``output``/``error``, ``usage`` only null, one choice,
    ``finish_reason`` only null, scalar values without escapes; keys without escapes, so a
    key can only be what it reads.  One group: the content string's escaped characters.
    """
    w = r"[ \t]*"
    number = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
    scalar = rf'(?:null|true|false|{number}|"[^"\\\n]*")'

    def members(used: str, core: str, *also: str) -> str:
        other = "|".join([rf'"(?!(?:{used})")[^"\\\n]*"{w}:{w}{scalar}', *also])
        return rf"\{{{w}(?:(?:{other}){w},{w})*{core}(?:{w},{w}(?:{other}))*{w}\}}"

    delta = members("content", rf'"content"{w}:{w}"{_TEXT}"')
    choice = members("delta|message|finish_reason", rf'"delta"{w}:{w}{delta}', rf'"finish_reason"{w}:{w}null')
    top = members(
        "choices|text|content|output|error|usage", rf'"choices"{w}:{w}\[{w}{choice}{w}\]', rf'"usage"{w}:{w}null'
    )
    return rf"{w}{top}{w}\n"


@functools.cache
def _plain() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """One plain delta from a line's start, and a run of them from the start: each ends in the
    ``\n`` that ``_plain_deltas`` joins events with.  Compiled when a long reply first needs them."""
    event = _plain_delta()
    return re.compile(f"^{event}", re.MULTILINE), re.compile(f"(?:{event})+")


@functools.lru_cache(maxsize=8)
def _shaped(head: str, tail: str) -> re.Pattern[str]:
    """Plain deltas written exactly like one already matched but for their text (a server
    writes every delta of a reply alike): a literal head and tail, matched ~5x faster."""
    return re.compile(f"^{re.escape(head)}{_TEXT}{re.escape(tail)}\n", re.MULTILINE)


def chunk_from_event(data: str) -> str | None:
    """The text an event carries, or None when it carries none (an OpenAI role-only delta).

    A JSON string is the text itself; drifted shapes are accepted too (``text_of``).  Data
    that is not JSON is a ``ProtocolError``; an error object is a ``ServiceError``.
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
    return text_of(_decode(data), data)


def _decode(data: str) -> object:
    return json_of(data, "malformed event data", "event data nested too deeply")


def json_of(text: str, malformed: str, deep: str) -> object:
    """A server's JSON, else a protocol error: ``malformed: <excerpt>``, or ``deep: <excerpt>``
    when it nests deeper than Python's recursion limit."""
    try:
        return JSON.decode(text)
    except ValueError:
        raise ProtocolError(f"{malformed}: {excerpt(text)}") from None
    except RecursionError:
        raise ProtocolError(f"{deep}: {excerpt(text)}") from None


def text_of(value: object, raw: str) -> str | None:
    """The reply text in a decoded event or JSON answer (``raw`` names it in the error)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if value.get("error") and not value.get("choices"):
            raise ServiceError(f"the service reported an error: {error_message(value)}", status=200)
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


def error_message(value: object) -> str:
    """The message of a server's error report -- ``{"error": {"message", "type", "code"}}``,
    ``{"error": "..."}``, ``{"message": ...}`` or plain text -- with its code, on one line."""
    error = value.get("error", value) if isinstance(value, dict) else value
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or error.get("type") or json.dumps(error)
        code = error.get("code")
        if code not in (None, "") and str(code) not in str(message):
            message = f"{message} (code {code})"
        return excerpt(str(message))
    return excerpt(str(error)) or "no details given"


class EventReader:
    """Reads a reply's events in order: their text, how the reply ended, and why.

    ``finish_reason`` is the last one an OpenAI-style stream gave; ``finished`` says whether
    the stream may end now without the reply being cut off.
    """

    __slots__ = ("choices", "finish_reason", "usage")

    def __init__(self) -> None:
        self.choices = False  # an OpenAI-style stream, which must say why it ended
        self.finish_reason: str | None = None
        self.usage: dict[str, object] | None = None  # token counts, when the server reports them

    @property
    def finished(self) -> bool:
        return not self.choices or self.finish_reason is not None

    def read(self, events: list[str]) -> tuple[list[str], bool, KoalaError | None]:
        """The non-empty texts of a run of events, whether the stream ended, and why if badly.

        A bad event ends the stream, but the good chunks before it in the same read are still
        delivered: nothing that arrived is lost.
        """
        chunks: list[str] = []
        start = self._plain_deltas(events, chunks) if events and events[0][:1] == "{" else 0
        for data in events[start:] if start else events:
            if data == "[DONE]":
                return chunks, True, self._incomplete()
            try:
                if data.__class__ is not str:  # a NamedEvent
                    text = self._named(data)  # type: ignore[arg-type]
                elif data[:1] == "{" and '"choices"' in data:
                    text = self._choice(data)
                else:
                    text = chunk_from_event(data)
            except KoalaError as exc:
                return chunks, True, exc
            if text:
                chunks.append(text)
        return chunks, False, None

    def _plain_deltas(self, events: list[str], chunks: list[str]) -> int:
        """The fast path: the texts of the leading run of events that are plain OpenAI deltas
        (``_plain_delta``), matched and decoded in C a run at a time; how many events that was.
        Each such event reads as it would one by one: its text, and an OpenAI-style stream."""
        if len(events) < _FAST_RUN or {*map(type, events)} != {str}:  # named events: one by one
            return 0
        one, run = _plain()
        text = "\n".join(events) + "\n"
        first = one.match(text)
        if first is None:
            return 0
        whole = text.count("\n") == len(events)  # else a "\n" inside an event: lines are not events
        raws: list[str] = _shaped(text[: first.start(1)], text[first.end(1) : first.end() - 1]).findall(text)
        if whole and len(raws) != len(events):  # not all written alike
            raws = one.findall(text)
        if not whole or len(raws) != len(events):  # not all plain: the leading run of them
            end = run.match(text).end()  # type: ignore[union-attr]  # the first one matched
            raws = one.findall(text, 0, end)
            if sum(map(len, events[: len(raws)])) + len(raws) != end:
                return 0
        return self._texts(raws, chunks)

    def _texts(self, raws: list[str], chunks: list[str]) -> int:
        """Decode plain deltas' texts, all in one call; up to a bad escape if there is one."""
        try:
            texts: list[str] = JSON.decode('["' + '","'.join(raws) + '"]')
        except ValueError:  # the events before it only; it is read on its own
            texts = []
            for raw in raws:
                try:
                    texts.append(scanstring(f'"{raw}"', 1, False)[0])
                except ValueError:
                    break
        if texts:
            self.choices = True
            chunks += filter(None, texts)
        return len(texts)

    def end(self) -> KoalaError | None:
        """The stream's end without ``[DONE]``: fine unless the reply was cut off."""
        return self._incomplete()

    def _incomplete(self) -> KoalaError | None:
        if self.finished:
            return None
        return NetworkError("the reply was cut off: the stream ended without the server saying it finished")

    def _choice(self, data: str) -> str | None:
        value = _decode(data)
        text = text_of(value, data)
        if not isinstance(value, dict):
            return text
        usage = value.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = value.get("choices")
        if choices and isinstance(choices[0], dict):
            self.choices = True
            reason = choices[0].get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finish_reason = reason
        return text

    def _named(self, event: NamedEvent) -> str | None:
        if event.type == "error":
            try:
                value: object = JSON.decode(event)
            except (ValueError, RecursionError):
                value = str(event)
            raise ServiceError(f"the service reported an error: {error_message(value)}", status=200)
        return chunk_from_event(event)  # other named events carry text as before
