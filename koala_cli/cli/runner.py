"""The guarded runner: one event loop per piece of work, with SIGINT and SIGTERM turned into
cancellation (which closes the reply's generators and so the connection) instead of death."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import KoalaError

__all__ = ["Outcome", "run_guarded"]


@dataclass
class Outcome:
    """How a guarded run ended: a value, a signal, or a koala error (or a closed pipe)."""

    value: Any = None
    signal: int | None = None
    error: BaseException | None = None
    completed: bool = False  # a signal caught after this is too late to stop anything


def run_guarded(work: Callable[[], Awaitable[Any]]) -> Outcome:
    """Run ``work`` in one event loop; SIGINT/SIGTERM cancel it instead of killing the process.

    Cancelling closes the reply's async generators (and so the connection) deterministically.
    """
    import anyio
    import anyio.abc

    outcome = Outcome()

    # A signal ignored when koala started (a background job of a script) stays ignored.
    watched = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]

    async def watch(scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(*watched) as signals:
            task_status.started()
            async for signum in signals:
                if not outcome.completed:
                    outcome.signal = signum
                    scope.cancel()
                return

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
    except KeyboardInterrupt:  # before the signal watch was in place
        outcome.signal = signal.SIGINT
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
