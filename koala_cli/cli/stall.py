"""A reply written into a stdout that takes nothing more -- a reader that stopped reading, a
terminal held with Ctrl-S -- blocks koala in ``write``, where no event loop runs and so no
signal watch: without help, Ctrl-C or SIGTERM would never end it.

While ``StallAware`` writes a reply, a signal (seen by the runner's handler, which calls
``signalled``) lets a stalled stdout go: fd 1 -- and fd 2, when it is the same pipe, for the
one line still to come -- is pointed at /dev/null, the blocked write (which Python retries
after the handler) ends at once, and the write raises ``Interrupted``, so nothing after it
happens: no ``done`` record, no history append, no last conversation.  The reader keeps what
it had not read yet; the piece being written may be cut.  A signal that comes just before
the write blocks is caught by a re-check a quarter of a second later.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from ..errors import Interrupted

if TYPE_CHECKING:
    from types import FrameType

    from ..output import Writer
    from ..turn import Reply

__all__ = ["StallAware", "abandoned", "signalled"]

RECHECK = 0.25  # seconds between looks at a stdout that had room when the signal came


class _State:
    writing = False  # a reply is being written
    pending: int | None = None  # a signal came while writing, and stdout still had room
    abandoned: int | None = None  # the signal that let stdout go


_STATE = _State()


class StallAware:
    """A reply's writer (``koala_cli.output.Writer``) whose stdout a signal may let go."""

    __slots__ = ("_writer",)

    def __init__(self, writer: Writer) -> None:
        self._writer = writer

    def start(self, model: str) -> None:
        _writing(self._writer.start, model)

    def chunks(self, batch: list[str]) -> None:
        _writing(self._writer.chunks, batch)

    def done(self, reply: Reply) -> None:
        _writing(self._writer.done, reply)

    def error(self, message: str, exit_status: int) -> None:
        if _STATE.abandoned is None:  # else there is nowhere left to say it
            with suppress(Interrupted):
                _writing(self._writer.error, message, exit_status)


def _writing(write: Callable[..., None], *args: Any) -> None:
    if _STATE.abandoned is not None:  # stdout is /dev/null: what is left to write is lost
        raise Interrupted(_STATE.abandoned)
    _STATE.writing = True
    try:
        write(*args)
    finally:
        _STATE.writing = False
        if _STATE.pending is not None:
            _STATE.pending = None
            signal.setitimer(signal.ITIMER_REAL, 0)
    if _STATE.abandoned is not None:
        raise Interrupted(_STATE.abandoned)


def abandoned() -> int | None:
    """The signal that let stdout go, if one did."""
    return _STATE.abandoned


def signalled(signum: int) -> None:
    """A signal came: if a reply is being written into a stdout that takes nothing, let it go;
    if stdout had room, look again shortly (the write may block right after)."""
    if not _STATE.writing or _STATE.abandoned is not None:
        return
    if not _writable():
        _let_go(signum)
    elif _STATE.pending is None:
        _STATE.pending = signum
        signal.signal(signal.SIGALRM, _recheck)
        signal.setitimer(signal.ITIMER_REAL, RECHECK)


def _recheck(alarm: int, frame: FrameType | None) -> None:
    signum = _STATE.pending
    if signum is None or not _STATE.writing:
        return
    if _writable():
        signal.setitimer(signal.ITIMER_REAL, RECHECK)
    else:
        _let_go(signum)


def _writable() -> bool:
    import select

    try:
        return bool(select.select([], [1], [], 0)[1])
    except (OSError, ValueError):
        return True


def _let_go(signum: int) -> None:
    _STATE.abandoned = signum
    with suppress(OSError):
        out, err = os.fstat(1), os.fstat(2)
        same = (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)  # `2>&1`: the line must not block
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        if same:
            os.dup2(devnull, 2)
        os.close(devnull)
