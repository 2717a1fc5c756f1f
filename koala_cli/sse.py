"""An incremental server-sent-events decoder that follows the WHATWG rules (stdlib only).

Why not ``str.splitlines()`` or httpx's ``aiter_lines()``: they also break at U+2028, U+0085
and friends, which are legal inside a JSON string.  SSE lines end at CRLF, CR or LF only.

The decoder is fed whatever the network gives -- bytes cut anywhere, even inside a UTF-8
sequence or between CR and LF -- and returns the data of each event completed so far.
"""

from __future__ import annotations

import codecs
import re

from .errors import NetworkError, ProtocolError

__all__ = ["MAX_EVENT_BYTES", "NamedEvent", "SSEDecoder"]

#: The largest event (or unterminated line) accepted before the stream is declared broken.
MAX_EVENT_BYTES = 8 * 1024 * 1024

# The common case, parsed in C: a run of events that are one ``data:`` line each.
_SIMPLE_RUN = re.compile(r"(?:data: ?[^\n]*\n\n)+")
_SIMPLE_DATA = re.compile(r"data: ?([^\n]*)\n\n")


class NamedEvent(str):
    """The data of an event whose ``event:`` field named a type other than ``message``."""

    type: str

    def __new__(cls, data: str, type: str) -> NamedEvent:  # noqa: A002 - the SSE field's name
        event = super().__new__(cls, data)
        event.type = type
        return event


class SSEDecoder:
    """Turn a byte stream into the ``data`` of its events, one string per dispatched event.

    An event of a named type (``event: error``) comes as a ``NamedEvent``; ``id`` and
    ``retry`` fields are parsed and ignored, comments (lines starting with ``:``) skipped.
    """

    __slots__ = ("_data", "_event", "_has_data", "_limit", "_pending", "_pending_size", "_size", "_skip_lf", "_utf8")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending: list[str] = []  # the start of a line whose end has not arrived yet, in pieces
        self._pending_size = 0
        self._data: list[str] = []  # data lines of the event being built
        self._has_data = False
        self._event = ""  # the event type of the event being built, if it named one
        self._size = 0  # characters in the event so far, one more per data line
        self._skip_lf = False  # the last piece ended in CR: a leading LF belongs to it
        self._limit = max_event_bytes

    def feed(self, data: bytes) -> list[str]:
        """Decode one piece of the stream; return the data of every event it completed."""
        text = self._utf8.decode(data)
        if not text:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if "\r" in text:
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:  # no line ends here: keep the piece, rescan nothing (a long line stays linear)
            self._pending.append(text)
            self._pending_size += len(text)
            if self._pending_size > self._limit:
                raise ProtocolError(f"event stream line longer than {self._limit} bytes")
            return []
        if self._pending:
            self._pending.append(text)
            text = "".join(self._pending)
        events: list[str] = []
        if not self._has_data and not self._event:
            end = text.rfind("\n\n") + 2
            if 2 <= end <= self._limit and _SIMPLE_RUN.fullmatch(text, 0, end):
                events = _SIMPLE_DATA.findall(text, 0, end)
                text = text[end:]
        lines = text.split("\n")
        tail = lines.pop()
        self._pending = [tail] if tail else []
        self._pending_size = len(tail)
        if len(tail) > self._limit:
            raise ProtocolError(f"event stream line longer than {self._limit} bytes")
        if lines:
            events += self._lines(lines)
        return events

    def close(self) -> None:
        """End of stream.  An event cut off before its blank line is not dispatched (the WHATWG
        rule); since that means the reply lost its end, it is an error, not a quiet success."""
        tail = "".join(self._pending) + self._utf8.decode(b"", final=True)
        self._pending = []
        if self._has_data or tail.partition(":")[0] == "data":  # a field named exactly "data"
            raise NetworkError("the event stream ended in the middle of an event")

    def _lines(self, lines: list[str]) -> list[str]:
        events: list[str] = []
        data = self._data
        size = self._size
        for line in lines:
            if line[:5] == "data:":
                value = line[6:] if line[5:6] == " " else line[5:]
                data.append(value)
                size += len(value) + 1
                self._has_data = True
            elif not line:
                if self._has_data:
                    text = data[0] if len(data) == 1 else "\n".join(data)
                    named = self._event not in ("", "message")
                    events.append(NamedEvent(text, self._event) if named else text)
                    data.clear()
                    size = 0
                    self._has_data = False
                self._event = ""
            elif line[0] == ":":
                continue
            elif line == "data":  # "data" without a colon: an empty data line
                data.append("")
                size += 1
                self._has_data = True
            elif line.partition(":")[0] == "event":
                value = line[6:]
                self._event = value[1:] if value[:1] == " " else value
            # id, retry and unknown fields carry nothing koala uses.
        self._size = size
        if size > self._limit:
            raise ProtocolError(f"event larger than {self._limit} bytes")
        return events
