"""The one place where errors become a message on stderr and an exit status.

Every line koala writes to stderr passes through ``say``: the secrets it knows of (the API
key, the credentials of a URL) are replaced by ``***``, URL user-info is masked, and control
characters -- a server's reason phrase may hold ``ESC ] 0;...BEL`` -- are shown escaped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, NoReturn

import typer

from ..errors import ExitStatus, Interrupted, KoalaError, OutputError
from .runner import reporting_interrupt

if TYPE_CHECKING:
    from ..output import Writer
    from .runner import Outcome

__all__ = ["debug_wanted", "fail", "finish", "hide", "say", "scrub", "silence_stdout", "tell_writer"]

_SECRETS: list[str] = []  # longest first, so a password is hidden before a part of it


def hide(*secrets: str | None) -> None:
    """Never print these (an API key, a URL's user-info and password), in any message."""
    for secret in secrets:
        if secret and secret not in _SECRETS:
            _SECRETS.append(secret)
    _SECRETS.sort(key=len, reverse=True)


def scrub(text: str) -> str:
    """``text`` with the known secrets and the user-info of every URL in it masked."""
    from ..text import mask_secrets, redact

    return redact(mask_secrets(text), _SECRETS)


def say(line: str) -> None:
    """One line on stderr, scrubbed and inert."""
    from ..text import inert

    sys.stderr.write(inert(scrub(line)) + "\n")
    sys.stderr.flush()


def debug_wanted(given: bool) -> bool:
    """``--debug`` where the option is not parsed yet: given, or KOALA_DEBUG read as Typer reads
    it for the option (1/true/yes/on; 0, false, no, off or empty: off)."""
    return given or os.environ.get("KOALA_DEBUG", "").strip().lower() in {"1", "true", "t", "yes", "y", "on"}


def finish(outcome: Outcome, writer: Writer | None, debug: bool) -> None:
    """Raise the exit for a failed outcome; return quietly for a successful one."""
    if outcome.signal is not None:
        fail(Interrupted(outcome.signal), writer, debug)
    if outcome.error is not None:
        fail(outcome.error, writer, debug)


def fail(exc: BaseException, writer: Writer | None, debug: bool) -> NoReturn:
    """The one place where errors become a message and an exit status."""
    if isinstance(exc, BrokenPipeError):
        silence_stdout()
        raise typer.Exit(ExitStatus.SIGPIPE)
    if not isinstance(exc, KoalaError):
        raise exc
    if isinstance(exc, OutputError):
        silence_stdout()  # nothing more can be written there, not even at exit
        writer = None
    status = exc.exit_status
    message = scrub(str(exc))
    if writer is not None:
        tell_writer(writer, message, status)
    if debug:
        import traceback

        for line in "".join(traceback.format_exception(exc)).splitlines():
            say(line)
    with reporting_interrupt() if isinstance(exc, Interrupted) else nullcontext():  # one line, even if signalled again
        say(f"koala: {message}" if isinstance(exc, Interrupted) else f"koala: error: {message}")
    raise typer.Exit(status)


def tell_writer(writer: Writer, message: str, status: int) -> None:
    """Let the writer end its output for an error; when stdout is gone or full by now, the
    error on stderr and its status are what counts, so that failure is not another one."""
    try:
        writer.error(message, status)
    except (BrokenPipeError, OutputError):
        silence_stdout()


def silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the exit-time flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:  # no file descriptor left for /dev/null: nothing more can be done
        pass


@contextmanager
def reported_interrupt(debug: bool = False) -> Iterator[None]:
    """Ctrl-C outside a guarded run -- koala blocked before its own signal handling (a config
    FIFO with no writer, a stdin pipe still open, a stalled `history show`) -- is reported as
    every interruption is: one line, 130.  Typer alone would exit 130 without a word."""
    try:
        yield
    except KeyboardInterrupt:
        import signal

        fail(Interrupted(signal.SIGINT), None, debug)
