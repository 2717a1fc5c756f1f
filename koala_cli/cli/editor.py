"""``-e/--edit`` and chat's ``/edit``: the composed prompt in ``$VISUAL`` or ``$EDITOR``.

The text goes to a new 0600 temporary file; the editor runs on the terminal (``/dev/tty``)
even when koala's stdin or stdout is a pipe; what it leaves is the prompt.  An empty file or
an editor that fails sends nothing (exit 2).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import IO, Any

from ..errors import UsageError


def editor_command(what: str = "-e/--edit") -> list[str]:
    """``$VISUAL``, else ``$EDITOR``, split into words (no shell)."""
    for variable in ("VISUAL", "EDITOR"):
        value = os.environ.get(variable, "").strip()
        if value:
            try:
                words = shlex.split(value)
            except ValueError as exc:
                raise UsageError(f"${variable} cannot be split into words: {exc}") from None
            if words:
                return words
    raise UsageError(f"{what} needs an editor: set $VISUAL or $EDITOR")


def edit(text: str, what: str = "-e/--edit") -> str:
    """Let the user edit ``text``; the result, or a usage error when it is empty or the editor failed."""
    import tempfile

    command = editor_command(what)
    descriptor, name = tempfile.mkstemp(prefix="koala-prompt-", suffix=".md")  # 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(text.encode("utf-8", "surrogateescape"))
        with _terminal() as (stdin, stdout), _keyboard_to_the_editor():
            try:
                status = subprocess.call([*command, name], stdin=stdin, stdout=stdout)
            except OSError as exc:
                raise UsageError(
                    f"cannot run the editor {command[0]!r}: {exc.strerror or exc}; nothing was sent"
                ) from None
        if status != 0:
            how = f"was killed by {_signal_name(-status)}" if status < 0 else f"failed (exit status {status})"
            raise UsageError(f"the editor {command[0]!r} {how}; nothing was sent")
        try:
            with open(name, "rb") as file:
                data = file.read()
        except OSError as exc:  # an editor that removed or replaced the file
            raise UsageError(f"cannot read what the editor left: {exc.strerror or exc}; nothing was sent") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
    try:
        edited = data.decode("utf-8").removeprefix("\ufeff").strip("\r\n")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the edited prompt is not valid UTF-8 (byte {exc.start}); nothing was sent") from None
    if not edited.strip():
        raise UsageError("the edited prompt is empty; nothing was sent")
    return edited


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@contextlib.contextmanager
def _keyboard_to_the_editor() -> Iterator[None]:
    """While the editor runs, Ctrl-C and Ctrl-\\ (sent to koala and the editor alike) are the
    editor's to handle: koala waits, as git does.  A handler that does nothing, not SIG_IGN,
    so the editor starts with the signals at their defaults; an ignored one stays ignored."""
    import signal

    def wait(signum: int, frame: object) -> None:
        pass

    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGQUIT)}
    kept = {signum: handler for signum, handler in kept.items() if handler not in (None, signal.SIG_IGN)}
    for signum in kept:
        signal.signal(signum, wait)
    try:
        yield
    finally:
        for signum, handler in kept.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _terminal() -> Iterator[tuple[Any, Any]]:
    """stdin and stdout for the editor: ours when they are a terminal, else ``/dev/tty``
    (a pipe is no place for an editor); without a terminal, /dev/null and our stderr."""
    opened: list[IO[bytes]] = []
    try:
        streams: list[Any] = []
        for stream, mode in ((sys.stdin, "rb"), (sys.stdout, "wb")):
            if stream is not None and _isatty(stream):
                streams.append(None)  # inherit
                continue
            try:
                tty = open("/dev/tty", mode)  # noqa: SIM115 - closed below
            except OSError:
                streams.append(subprocess.DEVNULL if mode == "rb" else sys.stderr.fileno())
            else:
                opened.append(tty)
                streams.append(tty)
        yield streams[0], streams[1]
    finally:
        for file in opened:
            file.close()


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return False
