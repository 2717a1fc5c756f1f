"""The request log (``--log FILE``): one JSON line per request, appended under a lock.

A line::

    {"time": "2026-11-28T05:20:01.123Z", "command": "ask", "profile": "local",
     "provider": "openai", "model": "llama3.2", "host": "127.0.0.1:11434",
     "chars_in": 12, "chars_out": 230, "usage": {"prompt_tokens": 9, ...} | null,
     "ms": 812.3, "exit_status": 0}

plus ``"prompt"`` (the text sent as the new turn) only with ``--log-prompts``.  ``chars_in``
counts the characters of every message sent; ``host`` carries no credentials.  Each line is
written with one ``write`` under an exclusive ``flock`` on a file opened for appending
(created 0600), the lock history files use, so concurrent runs never interleave.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from .errors import UsageError

__all__ = ["append_record", "check_log", "host_of", "log_record"]


def log_record(
    *,
    time: float,
    command: str,
    profile: str | None,
    provider: str,
    model: str,
    base_url: str,
    chars_in: int,
    chars_out: int,
    usage: Mapping[str, object] | None,
    elapsed_s: float,
    exit_status: int,
    prompt: str | None = None,
) -> dict[str, object]:
    """The record of one request; ``prompt`` is included only when given (``--log-prompts``)."""
    import datetime

    stamp = datetime.datetime.fromtimestamp(time, datetime.UTC)
    record: dict[str, object] = {
        "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
        "command": command,
        "profile": profile,
        "provider": provider,
        "model": model,
        "host": host_of(base_url),
        "chars_in": chars_in,
        "chars_out": chars_out,
        "usage": dict(usage) if usage else None,
        "ms": round(elapsed_s * 1000, 1),
        "exit_status": exit_status,
    }
    if prompt is not None:
        record["prompt"] = prompt
    return record


def host_of(url: str) -> str:
    """``host[:port]`` of a URL, without any user or password."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port is not None else host


def check_log(path: Path) -> None:
    """Fail before the request when the log could not be appended to."""
    if path.is_dir():
        raise UsageError(f"--log {path}: is a folder")
    target = path if path.exists() else path.parent
    if not target.exists():
        raise UsageError(f"--log {path}: folder {str(path.parent)!r} does not exist")
    if not os.access(target, os.W_OK):
        raise UsageError(f"--log {path}: permission denied")


def append_record(path: Path, record: Mapping[str, object]) -> None:
    """Append one line under an exclusive lock; an ``OSError`` becomes a ``UsageError``."""
    import fcntl

    line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "backslashreplace")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise UsageError(f"--log {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise UsageError(f"--log {path}: cannot append: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
