"""Standard input and output for the commands: the prompt from stdin, data to stdout,
notices to stderr."""

from __future__ import annotations

import os
import sys

from ..errors import OutputError, UsageError
from .exits import fail, say

__all__ = ["notice", "on_terminal", "read_stdin", "write_out"]


def read_stdin() -> str | None:
    """stdin's text when it is not a terminal, trailing newlines removed; None for none."""
    stream = sys.stdin
    if stream is None:
        return None
    try:
        if stream.isatty():
            return None
        data = stream.buffer.read()
    except (OSError, ValueError):
        return None  # closed or unusable stdin counts as none
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"standard input is not valid UTF-8 (byte {exc.start})") from None
    return text.rstrip("\r\n") or None


def write_out(text: str) -> None:
    """Data for stdout from the small commands: lone surrogates escaped; on a terminal, DEL and
    C1 controls escaped as JSON does (``\\u009b``) and other controls but newline and tab shown
    as ``^[``; a closed pipe quiet, a failed write one error line."""
    if on_terminal():  # JSON stays valid: its strings never hold a raw C0 control
        from ..text import json_terminal_safe, terminal_safe

        text = terminal_safe(json_terminal_safe(text))
    _write(text.encode("utf-8", "backslashreplace"))


def write_path(path: str | os.PathLike[str]) -> None:
    """A path on a line of its own: into a pipe its bytes as the system has them, so that
    ``"$(koala history last)"`` names the file even when its name is not UTF-8; on a terminal
    escaped, as ``write_out`` escapes."""
    if on_terminal():
        write_out(f"{os.fsdecode(path)}\n")
    else:
        _write(os.fsencode(path) + b"\n")


def _write(data: bytes) -> None:
    from ..output import GuardedStream

    stream = GuardedStream(sys.stdout.buffer)
    try:
        stream.write(data)
        stream.flush()
    except (BrokenPipeError, OutputError) as exc:
        fail(exc, None, False)


def on_terminal() -> bool:
    """Is stdout a terminal (where control characters act)?"""
    try:
        return sys.stdout.isatty()
    except (OSError, ValueError):
        return False


def notice(message: str) -> None:
    """One line on stderr, for retries and statistics: secrets masked, a server's words inert."""
    say(f"koala: {message}")
