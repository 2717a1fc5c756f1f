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

httpx errors are translated into this tree at one place (``streaming``); the CLI maps it
to exit statuses at one place (``commands._shared.fail``).  Anything else escaping is a bug.
"""

from __future__ import annotations

__all__ = [
    "BlockedError",
    "HistoryError",
    "KoalaError",
    "NetworkError",
    "OutputError",
    "ProtocolError",
    "ServiceError",
    "TimeoutError",
    "UsageError",
]


class KoalaError(Exception):
    """Root of every error koala raises on purpose."""

    exit_status: int = 1


class OutputError(KoalaError):
    """The reply could not be written (a closed pipe is not this: it ends quietly)."""


class UsageError(KoalaError):
    """The caller asked for something that cannot be done as asked."""

    exit_status = 2


class HistoryError(UsageError):
    """A history file is unusable; the message starts with ``FILE:LINE:`` when a line is at fault."""


class NetworkError(KoalaError):
    """The request did not get through, or the connection broke."""

    exit_status = 3


class TimeoutError(NetworkError):  # noqa: A001 - deliberately mirrors the builtin's meaning
    """The server went silent for longer than allowed."""


class ServiceError(KoalaError):
    """The service answered with a non-2xx status."""

    exit_status = 4

    def __init__(self, message: str, *, status: int, excerpt: str = "", attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.excerpt = excerpt
        self.attempts = attempts


class BlockedError(ServiceError):
    """The service answered with a bot-protection challenge instead of a reply."""


class ProtocolError(KoalaError):
    """The service answered, but not in a form koala understands."""

    exit_status = 5
