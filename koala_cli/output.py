"""Writers for the reply: raw text or NDJSON, one write and one flush per network read.

Only the data goes to the stream given here; notices and errors are the caller's, on stderr.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from json.encoder import encode_basestring  # the C encoder when available; no ASCII escaping
from typing import TYPE_CHECKING, BinaryIO, Protocol

from .errors import OutputError
from .text import json_terminal_safe, terminal_safe

if TYPE_CHECKING:
    from .turn import Reply

__all__ = ["GuardedStream", "JsonWriter", "TextWriter", "Writer"]


class Writer(Protocol):
    """Where a reply goes as it arrives."""

    def start(self, model: str) -> None: ...
    def chunks(self, batch: list[str]) -> None: ...
    def done(self, reply: Reply) -> None: ...
    def error(self, message: str, exit_status: int) -> None: ...


class GuardedStream:
    """A binary stream whose write failures are koala errors; a closed pipe stays
    ``BrokenPipeError``, which ends koala quietly rather than as an error.

    A stream left non-blocking by whoever started koala (``O_NONBLOCK`` on a shared pipe) is
    written as a blocking one would be: when it takes no more, koala waits until it does.
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def write(self, data: bytes) -> None:
        try:
            try:
                self._stream.write(data)
            except BlockingIOError as exc:
                self._finish(data[exc.characters_written :])
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write the output: {exc.strerror or exc}") from None

    def flush(self) -> None:
        try:
            try:
                self._stream.flush()
            except BlockingIOError:
                self._finish(b"")
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write the output: {exc.strerror or exc}") from None

    def _finish(self, rest: bytes) -> None:
        """Wait until a non-blocking stream takes what is buffered, then ``rest``."""
        import select

        while True:
            select.select([], [self._stream.fileno()], [])
            try:
                self._stream.flush()
            except BlockingIOError:
                continue
            if not rest:
                return
            try:
                self._stream.write(rest)
                rest = b""
            except BlockingIOError as exc:
                rest = rest[exc.characters_written :]


class TextWriter:
    """The reply text as it arrives, ending with a newline; byte-exact unless ``sanitize``.

    A UTF-16 surrogate pair that JSON escapes carried in two events is joined into its one
    character: a high half at the end of a read waits for the next; lone halves print as "?".
    """

    def __init__(self, stream: BinaryIO, *, sanitize: bool = False) -> None:
        self._stream = GuardedStream(stream)
        self._sanitize = sanitize
        self._ends_with_newline = True
        self._high = ""  # a high surrogate whose low half has not arrived yet

    def start(self, model: str) -> None:
        pass

    def chunks(self, batch: list[str]) -> None:
        text = batch[0] if len(batch) == 1 else "".join(batch)
        if self._high:
            text, self._high = self._high + text, ""
        if text and "\ud800" <= text[-1] <= "\udbff":
            text, self._high = text[:-1], text[-1]
        if text:
            self._write(text)

    def _write(self, text: str) -> None:
        if self._sanitize:
            text = terminal_safe(text)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # surrogates: pairs become their character, lone halves "?"
            data = _SURROGATE_PAIR.sub(_join_pair, text).encode("utf-8", "replace")
        self._stream.write(data)
        self._stream.flush()
        self._ends_with_newline = text[-1] == "\n"

    def _end_line(self) -> None:
        if self._high:
            self._high = ""
            self._write("\ud800")  # a high half that never got its low half: "?"
        if not self._ends_with_newline:
            self._stream.write(b"\n")
            self._stream.flush()
            self._ends_with_newline = True

    def done(self, reply: Reply) -> None:
        self._end_line()

    def error(self, message: str, exit_status: int) -> None:
        self._end_line()  # keep the shell prompt off the cut-off line


_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _join_pair(match: re.Match[str]) -> str:
    pair = match.group()
    return chr(0x10000 + ((ord(pair[0]) - 0xD800) << 10) + (ord(pair[1]) - 0xDC00))


def _line(record: dict[str, object]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


class JsonWriter:
    """NDJSON: a start record, one record a chunk, then a done or an error record.

    Always valid JSON; with ``sanitize`` (a terminal) no control character is written raw.
    """

    def __init__(self, stream: BinaryIO, *, sanitize: bool = False, start: Mapping[str, object] | None = None) -> None:
        self._stream = GuardedStream(stream)
        self._sanitize = sanitize
        self._start = dict(start or {})  # more fields of the start record (the sampling options)
        self._text: list[bytes] = []  # the reply so far, JSON-escaped UTF-8, one piece per batch

    def _encode(self, text: str) -> bytes:
        if self._sanitize:
            text = json_terminal_safe(text)
        return text.encode("utf-8", "backslashreplace")

    def _write(self, text: str) -> None:
        self._stream.write(self._encode(text))
        self._stream.flush()

    def start(self, model: str) -> None:
        self._write(_line({"type": "start", "model": model, **self._start}))

    def chunks(self, batch: list[str]) -> None:
        # Hand-built records: json.dumps per chunk would cost more than everything else here.
        escaped = [encode_basestring(text) for text in batch]
        self._write("".join([f'{{"type":"chunk","text":{text}}}\n' for text in escaped]))
        self._text.append(self._encode("".join([text[1:-1] for text in escaped])))

    def done(self, reply: Reply) -> None:
        """The done record; its text is written from the escaped pieces, never held twice."""
        first = None if reply.first_chunk_s is None else round(reply.first_chunk_s * 1000, 1)
        rest = _line(
            {
                "model": reply.model,
                "chunks": reply.chunks,
                "chars": reply.chars,
                "first_chunk_ms": first,
                "elapsed_ms": round(reply.elapsed_s * 1000, 1),
                "chars_per_s": reply.chars_per_s,
                "finish_reason": reply.finish_reason,
                **({"usage": reply.usage} if reply.usage is not None else {}),
            }
        )
        write = self._stream.write
        write(b'{"type":"done","text":"')
        for piece in self._text:  # piece by piece: the reply is never joined in memory
            write(piece)
        write(self._encode('",' + rest[1:]))
        self._stream.flush()
        self._text.clear()

    def error(self, message: str, exit_status: int) -> None:
        self._write(_line({"type": "error", "message": message, "exit_status": exit_status}))
