"""The guarded runner: one event loop per piece of work, with SIGINT, SIGTERM and SIGHUP (the
terminal or the ssh connection gone) turned into cancellation (which closes the reply's
generators and so the connection) instead of death.

Signals are never left to Python's default handling while koala runs its work or ends
because of one: before the loop's own signal watch is in place, and after it is gone, a
handler of ours notes the signal instead of raising ``KeyboardInterrupt`` at a random point.
Once a signal has stopped the work, koala is on its way out: a second signal only makes it
leave sooner (``ending``), with the first signal's status and its one line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import anyio

from ..errors import ExitStatus, KoalaError
from . import stall

__all__ = ["Outcome", "reporting_interrupt", "restore_signals", "run_guarded"]

Handler = Callable[[int, FrameType | None], Any] | int | None


@dataclass
class Outcome:
    """How a guarded run ended: a value, a signal, or a koala error (or a closed pipe)."""

    value: Any = None
    signal: int | None = None
    error: BaseException | None = None
    completed: bool = False  # a signal caught after this is too late to stop anything
    late: int | None = None  # ... and here it is (the caller decides what it still means)


@dataclass
class _Signals:
    """The process's signal state between guarded runs."""

    noted: list[int] = field(default_factory=list)  # caught by ``_note`` outside the watch
    previous: dict[int, Handler] = field(default_factory=dict)  # handlers to restore
    ending: int | None = None  # the exit status once a signal has stopped the work
    reported: bool = False  # its one stderr line is written


_STATE = _Signals()


def _watched() -> list[signal.Signals]:
    """SIGINT, SIGTERM and SIGHUP, unless ignored when koala started (a background job of a
    script; ``nohup``)."""
    stopping = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    return [s for s in stopping if signal.getsignal(s) is not signal.SIG_IGN]


def _note(signum: int, frame: FrameType | None) -> None:
    _STATE.noted.append(signum)
    stall.signalled(signum)  # a reply blocked on a stalled stdout must still end


def _ending(signum: int, frame: FrameType | None) -> None:
    """A second signal while koala ends after the first: leave now, with one line in all."""
    status = _STATE.ending if _STATE.ending is not None else ExitStatus.for_signal(signum)
    if not _STATE.reported:
        name = signal.Signals(status - 128).name if status > 128 else signal.Signals(signum).name
        with suppress(OSError):
            os.write(2, f"koala: interrupted by {name}\n".encode())
    os._exit(status)


def restore_signals() -> int | None:
    """Give the signals back to their handlers from before the last guarded run (chat's
    prompt); the first signal our handler noted in the meantime, if any."""
    for signum, handler in _STATE.previous.items():
        signal.signal(signum, handler)
    _STATE.previous.clear()
    noted = _STATE.noted[0] if _STATE.noted else None
    _STATE.noted.clear()
    _STATE.ending = None
    _STATE.reported = False
    return noted


@contextmanager
def reporting_interrupt() -> Iterator[None]:
    """Around the one stderr line of an interrupt: no second signal may cut it or repeat it.

    After it nothing is left to do but exit, so later signals are ignored.
    """
    watched = _watched()
    signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        yield
    finally:
        _STATE.reported = True
        for signum in watched:
            signal.signal(signum, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, watched)


def run_guarded(work: Callable[[], Awaitable[Any]], *, final: bool = False, runner: Any = None) -> Outcome:
    """Run ``work`` in one event loop; SIGINT/SIGTERM/SIGHUP cancel it instead of killing the process.

    Cancelling closes the reply's async generators (and so the connection) deterministically.
    ``runner``: an ``asyncio.Runner`` whose loop outlives this run (a chat session's, so its
    connections stay usable from one turn to the next); by default a new loop (``anyio.run``).
    Afterwards the signals go back to their earlier handlers -- except when a signal stopped
    the work (a second one ends koala at once), or when the work succeeded and is ``final``
    (its result is saved: a signal now is too late, and the exit status stays 0; it is noted
    in ``Outcome.late``, and ``restore_signals`` gives the handlers back).  A signal that
    comes as work that is not final ends counts as stopping it.
    """
    import anyio

    guard = _Guard(_watched())
    # Every signal also writes its number here (Python's wakeup fd): the watch reads them in
    # the loop, and whatever it had no time to read is still here afterwards -- none is lost.
    reader, wakeup = socket.socketpair()
    reader.setblocking(False)
    wakeup.setblocking(False)
    earlier = signal.set_wakeup_fd(wakeup.fileno(), warn_on_full_buffer=False)
    try:
        if runner is None:
            anyio.run(guard.main, work, reader)
        else:
            runner.run(guard.main(work, reader))
    except KeyboardInterrupt:  # pragma: no cover - _note keeps it from happening
        guard.outcome.signal = guard.outcome.signal or signal.SIGINT
    finally:
        _STATE.noted.clear()
        signal.set_wakeup_fd(earlier)
        leftover = _drain(reader)
        reader.close()
        wakeup.close()
    return guard.settle(leftover, final)


class _Guard:
    """One guarded run: its signal watch, and the outcome it comes to."""

    def __init__(self, watched: list[signal.Signals]) -> None:
        self.watched = watched
        self.outcome = Outcome()
        for signum in watched:
            _STATE.previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, _note)  # never KeyboardInterrupt at a random point

    async def main(self, work: Callable[[], Awaitable[Any]], reader: socket.socket) -> None:
        import anyio

        outcome = self.outcome
        async with anyio.create_task_group() as group:
            await group.start(self._watch, reader, group.cancel_scope)
            for signum in list(_STATE.noted):  # came before the wakeup socket was in place
                self._stop(signum, group.cancel_scope)
            try:
                outcome.value = await work()
            except (KoalaError, BrokenPipeError) as exc:
                outcome.error = exc
            except BaseExceptionGroup as errors:  # raised inside a task group of the work (batch)
                outcome.error = _expected(errors)
            finally:
                outcome.completed = True
                group.cancel_scope.cancel()

    async def _watch(self, reader: socket.socket, scope: anyio.CancelScope, *, task_status: Any) -> None:
        import anyio

        task_status.started()
        while True:  # until cancelled: a second signal must not kill either
            await anyio.wait_readable(reader)
            for signum in _drain(reader):
                self._stop(signum, scope)

    def _stop(self, signum: int, scope: anyio.CancelScope) -> None:
        outcome = self.outcome
        if signum not in self.watched:
            return
        if outcome.completed:
            outcome.late = outcome.late or signum
        elif outcome.signal is None:
            outcome.signal = signum
            scope.cancel()

    def settle(self, leftover: list[int], final: bool) -> Outcome:
        """The outcome, counting the signals that came as the loop ended; the handlers for
        what comes next."""
        outcome = self.outcome
        for number in [*leftover, *_STATE.noted]:  # came as the loop ended
            if number in self.watched and outcome.signal is None:
                outcome.late = outcome.late or number
        if outcome.late is not None and not final:  # nothing was committed: it still counts
            outcome.signal, outcome.late = outcome.late, None
        if outcome.signal is not None:
            _STATE.ending = ExitStatus.for_signal(outcome.signal)
            for signum in self.watched:
                signal.signal(signum, _ending)
        elif outcome.error is not None or not final:
            restore_signals()
        return outcome


def _drain(reader: socket.socket) -> list[int]:
    """The signal numbers waiting in the wakeup socket."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        while piece := reader.recv(512):
            data += piece
    return list(data)


def _expected(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a group of koala errors and closed pipes; anything else is a bug."""
    pipes, rest = group.split(BrokenPipeError)
    koala, other = rest.split(KoalaError) if rest is not None else (None, None)
    if other is not None:
        raise group
    if pipes is not None or koala is None:
        return BrokenPipeError()
    first: BaseException = koala
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first
