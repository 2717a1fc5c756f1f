"""JSONL conversation history: one OpenAI-shaped message a line.

Loading reports ``FILE:LINE: why``; appending writes both new lines in one ``write`` under an
exclusive lock, fsyncs, and on failure truncates the file back to its earlier length, so a
file is never left with half a turn.

Nothing here blocks where it could not be interrupted: a path that names no regular file (a
FIFO, a device, a socket) is refused before and after a non-blocking ``open``, and a lock
another process holds is either waited for (``wait=True``, the plain library call) or
reported at once as ``LockBusy`` (``wait=False``), which ``waiting`` retries on a bounded
schedule of event-loop sleeps, so signals and deadlines keep working while it waits.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from .errors import HistoryError
from .messages import ROLES, Message

__all__ = [
    "LockBusy",
    "append_turns",
    "check_writable",
    "format_messages",
    "load_history",
    "parse_history",
    "read_history",
    "validate_message",
    "waiting",
]

_ROLE_LIST = "system, user or assistant"
NOTICE_AFTER = 1.0  # seconds of waiting for a lock before saying so
POLL_FIRST, POLL_MAX = 0.002, 0.1  # the lock is tried again after these, doubling in between

T = TypeVar("T")
_DECODER = json.JSONDecoder()
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]  # C: (value, end)


class LockBusy(HistoryError):
    """Another process holds the history's lock (only with ``wait=False``)."""


def load_history(path: Path, *, wait: bool = True) -> list[Message]:
    """The messages of a history file; a missing file is an empty history."""
    return parse_history(read_history(path, wait=wait), str(path))


def read_history(path: Path, *, wait: bool = True) -> bytes:
    """A history file's bytes, read under a shared lock; a missing file reads as empty."""
    try:
        fd = _open(path, os.O_RDONLY)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise HistoryError(f"{path}: directory {str(path.parent)!r} does not exist") from None
        return b""
    except OSError as exc:
        raise HistoryError(f"{path}: {exc.strerror or exc}") from None
    try:
        _lock(fd, path, fcntl.LOCK_SH, wait)
        with open(fd, "rb", closefd=False) as file:
            return file.read()
    except OSError as exc:
        raise HistoryError(f"{path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _not_regular(path: Path) -> HistoryError:
    return HistoryError(f"{path}: not a regular file (a history must be one)")


def _open(path: Path, flags: int) -> int:
    """Open a history without ever blocking: a FIFO, device or socket is refused, before the
    ``open`` (no side effects of opening a device) and after it (no race with a swap)."""
    with contextlib.suppress(FileNotFoundError):  # a file yet to be created is the caller's case
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise _not_regular(path)
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket, or a FIFO with no reader
            raise _not_regular(path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_regular(path)
    os.set_blocking(fd, True)
    return fd


def _lock(fd: int, path: Path, operation: int, wait: bool) -> None:
    try:
        fcntl.flock(fd, operation if wait else operation | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LockBusy(f"{path}: locked by another process") from None


async def waiting(attempt: Callable[[], T], path: Path, notify: Callable[[str], None]) -> T:
    """``attempt()`` (a ``wait=False`` call) until the lock is free, sleeping in the event loop
    in between, so a signal or a deadline can end the wait; after a second, one notice."""
    import anyio

    started = time.monotonic()
    delay = POLL_FIRST
    told = False
    while True:  # ends when the lock frees, or by cancellation (a signal, --max-time)
        try:
            return attempt()
        except LockBusy:
            pass
        if not told and time.monotonic() - started >= NOTICE_AFTER:
            notify(f"waiting for the lock on {path} (another process is using it)")
            told = True
        await anyio.sleep(delay)
        delay = min(delay * 2, POLL_MAX)


def check_writable(path: Path) -> None:
    """Fail before the request, not after it, when the reply could not be saved.

    A symlink is followed: its target must be a writable regular file, or be creatable in an
    existing, writable directory (a dangling link into a missing directory is refused).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # a symlink loop, a path through a file, ...
        raise HistoryError(f"{path}: {exc.strerror or exc}") from None
    if mode is not None:
        if not stat.S_ISREG(mode):
            raise _not_regular(path)
        if not os.access(path, os.W_OK):
            raise HistoryError(f"{path}: permission denied (cannot append to it)")
        return
    target = Path(os.path.realpath(path))  # where the file would be created: a link's target
    where = "" if target == Path(os.path.abspath(path)) else f" (it links to {str(target)!r})"
    if not target.parent.is_dir():
        raise HistoryError(f"{path}: cannot be created: no directory {str(target.parent)!r}{where}")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise HistoryError(f"{path}: permission denied (cannot create it){where}")


def parse_history(data: bytes, name: str) -> list[Message]:
    """Validate and decode a history file's bytes; blank lines, CRLF and a BOM are tolerated.

    Line by line from the bytes (a UTF-8 ``\\n`` is never part of another character): the
    whole file is never one string -- four bytes a character as soon as it holds one emoji.
    """
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return _parse(data, name)
    except HistoryError:
        try:  # a byte that is not UTF-8, anywhere, is the error to report first
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            number = data.count(b"\n", 0, exc.start) + 1
            raise HistoryError(f"{name}:{number}: not valid UTF-8") from None
        raise


def _parse(data: bytes, name: str) -> list[Message]:
    messages: list[Message] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw:
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise HistoryError(f"{name}:{number}: not valid UTF-8") from None
        if line.isspace():
            continue
        value = _decode(line, name, number)
        role = value.get("role") if type(value) is dict else None
        if type(role) is str and role in ROLES and type(value.get("content")) is str:
            messages.append(value)  # the common case, checked without building FILE:LINE
        else:
            messages.append(validate_message(value, f"{name}:{number}"))
    return messages


def _decode(line: str, name: str, number: int) -> Any:
    """One line's JSON value: by the C scanner alone when it reads the whole line, else as
    ``json`` decodes (surrounding white space, and every error's message)."""
    try:
        value, end = _SCAN(line, 0)
    except (StopIteration, ValueError, RecursionError):
        end = -1
    if end == len(line):
        return value
    try:
        return _DECODER.decode(line)
    except (ValueError, RecursionError) as exc:
        raise HistoryError(f"{name}:{number}: not valid JSON ({_json_reason(exc)})") from None


def _json_reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):  # deeper than Python's recursion limit
        return "nested too deeply"
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


def append_turns(path: Path, user: str, assistant: str, *, wait: bool = True) -> None:
    """Append a user turn and its reply as one write under an exclusive lock.

    A new file is created readable by its owner only.  If the write fails the file is cut back
    to its exact earlier length.  With ``wait=False`` a held lock raises ``LockBusy``.
    """
    data = format_messages([{"role": "user", "content": user}, {"role": "assistant", "content": assistant}])
    try:
        fd = _open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    except OSError as exc:
        raise HistoryError(f"{path}: cannot open for appending: {exc.strerror or exc}") from None
    try:
        _lock(fd, path, fcntl.LOCK_EX, wait)
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
