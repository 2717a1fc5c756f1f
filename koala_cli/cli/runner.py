"""The guarded runner: one event loop per piece of work, with SIGINT and SIGTERM turned into
cancellation (which closes the reply's generators and so the connection) instead of death.

Signals are never left to Python's default handling while koala runs its work or ends
because of one: before the loop's own signal watch is in place, and after it is gone, a
handler of ours notes the signal instead of raising ``KeyboardInterrupt`` at a random point.
Once a signal has stopped the work, koala is on its way out: a second signal only makes it
leave sooner (``ending``), with the first signal's status and its one line.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from ..errors import ExitStatus, KoalaError

__all__ = ["Outcome", "reporting_interrupt", "restore_signals", "run_guarded"]

Handler = Callable[[int, FrameType | None], Any] | int | None


@dataclass
class Outcome:
    """How a guarded run ended: a value, a signal, or a koala error (or a closed pipe)."""

    value: Any = None
    signal: int | None = None
    error: BaseException | None = None
    completed: bool = False  # a signal caught after this is too late to stop anything


@dataclass
class _Signals:
    """The process's signal state between guarded runs."""

    noted: list[int] = field(default_factory=list)  # caught by ``_note`` outside the watch
    previous: dict[int, Handler] = field(default_factory=dict)  # handlers to restore
    ending: int | None = None  # the exit status once a signal has stopped the work
    reported: bool = False  # its one stderr line is written


_STATE = _Signals()


def _watched() -> list[signal.Signals]:
    """SIGINT and SIGTERM, unless ignored when koala started (a background job of a script)."""
    return [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]


def _note(signum: int, frame: FrameType | None) -> None:
    _STATE.noted.append(signum)


def _ending(signum: int, frame: FrameType | None) -> None:
    """A second signal while koala ends after the first: leave now, with one line in all."""
    status = _STATE.ending if _STATE.ending is not None else ExitStatus.for_signal(signum)
    if not _STATE.reported:
        name = signal.Signals(status - 128).name if status > 128 else signal.Signals(signum).name
        with suppress(OSError):
            os.write(2, f"koala: interrupted by {name}\n".encode())
    os._exit(status)


def restore_signals() -> None:
    """Give the signals back to their handlers from before the last guarded run (chat's prompt)."""
    for signum, handler in _STATE.previous.items():
        signal.signal(signum, handler)
    _STATE.previous.clear()
    _STATE.noted.clear()
    _STATE.ending = None
    _STATE.reported = False


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


def run_guarded(work: Callable[[], Awaitable[Any]], *, final: bool = False) -> Outcome:
    """Run ``work`` in one event loop; SIGINT/SIGTERM cancel it instead of killing the process.

    Cancelling closes the reply's async generators (and so the connection) deterministically.
    Afterwards the signals go back to their earlier handlers -- except when a signal stopped
    the work (a second one ends koala at once), or when the work succeeded and is ``final``
    (its result is saved: a signal now is too late, and the exit status stays 0).
    """
    import anyio
    import anyio.abc

    outcome = Outcome()
    watched = _watched()
    _STATE.noted.clear()
    for signum in watched:
        _STATE.previous.setdefault(signum, signal.getsignal(signum))
        signal.signal(signum, _note)  # what the loop's receiver gives back when it closes

    def stop(signum: int, scope: anyio.CancelScope) -> None:
        if not outcome.completed and outcome.signal is None:
            outcome.signal = signum
            scope.cancel()

    async def watch(scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(*watched) as signals:
            task_status.started()
            if _STATE.noted:  # caught while the loop was starting
                stop(_STATE.noted[0], scope)
            async for signum in signals:  # keeps receiving: a second signal must not kill
                stop(signum, scope)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            await group.start(watch, group.cancel_scope)
            try:
                outcome.value = await work()
            except (KoalaError, BrokenPipeError) as exc:
                outcome.error = exc
            except BaseExceptionGroup as errors:  # raised inside a task group of the work (batch)
                outcome.error = _expected(errors)
            finally:
                outcome.completed = True
                group.cancel_scope.cancel()

    try:
        anyio.run(main)
    except KeyboardInterrupt:  # pragma: no cover - _note keeps it from happening
        outcome.signal = outcome.signal or signal.SIGINT
    if outcome.signal is None and _STATE.noted and not outcome.completed:
        outcome.signal = _STATE.noted[0]
    if outcome.signal is not None:
        _STATE.ending = ExitStatus.for_signal(outcome.signal)
        for signum in watched:
            signal.signal(signum, _ending)
    elif outcome.error is not None or not final:
        restore_signals()
    return outcome


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
