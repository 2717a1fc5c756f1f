"""The one place where errors become a message on stderr and an exit status."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NoReturn

import typer

from ..errors import ExitStatus, Interrupted, KoalaError, OutputError

if TYPE_CHECKING:
    from ..output import Writer
    from .runner import Outcome

__all__ = ["fail", "finish", "silence_stdout"]


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
    if writer is not None:
        try:
            writer.error(str(exc), status)
        except BrokenPipeError:
            silence_stdout()
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    message = str(exc) if isinstance(exc, Interrupted) else f"error: {exc}"
    sys.stderr.write(f"koala: {message}\n")
    sys.stderr.flush()
    raise typer.Exit(status)


def silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the exit-time flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
