"""The one error tree of koala; every class knows the exit status it maps to.

    KoalaError                    1  internal / unexpected condition
    ├── OutputError               1  standard output cannot be written (disk full, ...)
    ├── UsageError                2  bad arguments, empty prompt, stdin not UTF-8
    │   └── HistoryError          2  a history file that cannot be read or is malformed
    ├── NetworkError              3  cannot connect, DNS, proxy, connection dropped mid-reply
    │   └── TimeoutError          3  no bytes within the idle timeout, or past --max-time
    ├── ServiceError              4  the service answered with an HTTP error status
    │   └── BlockedError          4  ... and it was a bot challenge (Cloudflare)
    └── ProtocolError             5  the answer is not the expected event stream

    Interrupted          128+N  a signal (SIGINT 130, SIGTERM 143, SIGHUP 129) stopped the work

httpx errors are translated into this tree at one place (``transport``); the CLI maps it to
exit statuses at one place (``cli.exits``).  Anything else escaping is a bug.  ``ExitStatus``
names every status the command can end with, and writes the help text that lists them.
"""

from __future__ import annotations

import signal
from enum import IntEnum

__all__ = [
    "BlockedError",
    "ExitStatus",
    "HistoryError",
    "Interrupted",
    "KoalaError",
    "NetworkError",
    "OutputError",
    "ProtocolError",
    "ServiceError",
    "TimeoutError",
    "UsageError",
]


class ExitStatus(IntEnum):
    """Every status ``koala`` exits with; the CLI's help text is written from it."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NETWORK = 3
    SERVICE = 4
    PROTOCOL = 5
    SIGHUP = 128 + signal.SIGHUP
    SIGINT = 128 + signal.SIGINT
    SIGPIPE = 128 + signal.SIGPIPE
    SIGTERM = 128 + signal.SIGTERM

    @classmethod
    def for_signal(cls, signum: int) -> int:
        """The status a shell reports for a process stopped by ``signum``."""
        return 128 + signum


_MEANING = {
    ExitStatus.OK: "success",
    ExitStatus.ERROR: "internal error, or stdout cannot be written",
    ExitStatus.USAGE: "usage or bad input: arguments, empty prompt, stdin not UTF-8, bad history file",
    ExitStatus.NETWORK: "network: cannot connect, DNS, proxy, timeout, connection dropped mid-reply",
    ExitStatus.SERVICE: "the service answered an HTTP error (or a Cloudflare challenge)",
    ExitStatus.PROTOCOL: "protocol: the answer is not the expected event stream",
}


def exit_status_help(success: str = _MEANING[ExitStatus.OK]) -> str:
    """The ``Exit status:`` block of ``--help`` (``success`` rewords status 0 for a command)."""
    meanings = {**_MEANING, ExitStatus.OK: success}
    lines = [f"  {status.value:<5}{meaning}" for status, meaning in meanings.items()]
    lines.append(
        f"  {ExitStatus.SIGINT.value}  interrupted (SIGINT); {ExitStatus.SIGTERM.value} terminated (SIGTERM); "
        f"{ExitStatus.SIGHUP.value} hung up (SIGHUP); {ExitStatus.SIGPIPE.value} stdout closed"
    )
    return "\b\nExit status:\n" + "\n".join(lines)


class KoalaError(Exception):
    """Root of every error koala raises on purpose."""

    exit_status: int = ExitStatus.ERROR


class OutputError(KoalaError):
    """The reply could not be written (a closed pipe is not this: it ends quietly)."""


class UsageError(KoalaError):
    """The caller asked for something that cannot be done as asked."""

    exit_status = ExitStatus.USAGE


class HistoryError(UsageError):
    """A history file is unusable; the message starts with ``FILE:LINE:`` when a line is at fault."""


class NetworkError(KoalaError):
    """The request did not get through, or the connection broke."""

    exit_status = ExitStatus.NETWORK


class TimeoutError(NetworkError):  # noqa: A001 - deliberately mirrors the builtin's meaning
    """The server went silent for longer than allowed."""


class ServiceError(KoalaError):
    """The service answered with a non-2xx status."""

    exit_status = ExitStatus.SERVICE

    def __init__(self, message: str, *, status: int, excerpt: str = "", attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.excerpt = excerpt
        self.attempts = attempts


class BlockedError(ServiceError):
    """The service answered with a bot-protection challenge instead of a reply."""


class ProtocolError(KoalaError):
    """The service answered, but not in a form koala understands."""

    exit_status = ExitStatus.PROTOCOL


class Interrupted(KoalaError):
    """A signal stopped the work; the status is 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_status = ExitStatus.for_signal(signum)
