"""JSONL conversation history: one OpenAI-shaped message a line.

Loading reports ``FILE:LINE: why``; appending writes both new lines in one ``write`` under an
exclusive lock, fsyncs, and on failure truncates the file back to its earlier length, so a
file is never left with half a turn.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import json
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import HistoryError
from .messages import ROLES, Message

__all__ = [
    "append_turns",
    "check_writable",
    "format_messages",
    "load_history",
    "parse_history",
    "read_history",
    "validate_message",
]

_ROLE_LIST = "system, user or assistant"


def load_history(path: Path) -> list[Message]:
    """The messages of a history file; a missing file is an empty history."""
    return parse_history(read_history(path), str(path))


def read_history(path: Path) -> bytes:
    """A history file's bytes, read under a shared lock; a missing file reads as empty."""
    try:
        with path.open("rb") as file:
            fcntl.flock(file, fcntl.LOCK_SH)
            return file.read()
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise HistoryError(f"{path}: directory {str(path.parent)!r} does not exist") from None
        return b""
    except OSError as exc:
        raise HistoryError(f"{path}: {exc.strerror or exc}") from None


def check_writable(path: Path) -> None:
    """Fail before the request, not after it, when the reply could not be saved."""
    if path.exists() and not path.is_file():
        raise HistoryError(f"{path}: not a regular file (a history must be one)")
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise HistoryError(f"{path}: permission denied (cannot append to it)")


def parse_history(data: bytes, name: str) -> list[Message]:
    """Validate and decode a history file's bytes; blank lines, CRLF and a BOM are tolerated."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        number = data.count(b"\n", 0, exc.start) + 1
        raise HistoryError(f"{name}:{number}: not valid UTF-8") from None
    messages: list[Message] = []
    loads = json.loads
    for number, raw in enumerate(text.split("\n"), 1):
        if not raw or raw.isspace():
            continue
        try:
            value = loads(raw)
        except ValueError as exc:
            raise HistoryError(f"{name}:{number}: not valid JSON ({_json_reason(exc)})") from None
        messages.append(validate_message(value, f"{name}:{number}"))
    return messages


def _json_reason(exc: ValueError) -> str:
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)


def validate_message(value: object, where: str) -> Message:
    if not isinstance(value, dict):
        raise HistoryError(f"{where}: expected a JSON object, got {type(value).__name__}")
    role = value.get("role")
    if role is None:
        raise HistoryError(f'{where}: missing "role" ({_ROLE_LIST})')
    if not isinstance(role, str) or role not in ROLES:
        raise HistoryError(f"{where}: unknown role {str(role)[:40]!r} (expected {_ROLE_LIST})")
    content = value.get("content")
    if not isinstance(content, str):
        what = "missing" if "content" not in value else "null" if content is None else f"a {type(content).__name__}"
        raise HistoryError(f'{where}: "content" must be a string, not {what}')
    return value  # type: ignore[return-value]  # validated; extra keys are kept


def format_messages(messages: Iterable[Message]) -> bytes:
    """JSONL bytes for messages; a lone surrogate is written as its JSON escape."""
    lines = [json.dumps({"role": m["role"], "content": m["content"]}, ensure_ascii=False) for m in messages]
    return ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")


def append_turns(path: Path, user: str, assistant: str) -> None:
    """Append a user turn and its reply as one write under an exclusive lock.

    A new file is created readable by its owner only.  If the write fails the file is cut back
    to its exact earlier length.
    """
    data = format_messages([{"role": "user", "content": user}, {"role": "assistant", "content": assistant}])
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise HistoryError(f"{path}: cannot open for appending: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # never glue a turn onto an unterminated last line
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise HistoryError(f"{path}: cannot append: {exc.strerror or exc}; the file was left as it was") from None
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
