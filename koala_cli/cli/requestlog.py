"""``--log FILE``: one JSON line per request (the record is built by ``koala_cli.requestlog``)."""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ..turn import Connection

LogFile = Annotated[
    Path | None,
    typer.Option(
        "--log",
        metavar="FILE",
        envvar="KOALA_LOG",
        help="Append one JSON line per request to FILE (time, model, host, sizes, usage, status).",
    ),
]
LogPrompts = Annotated[bool, typer.Option("--log-prompts", help="With --log: include the prompt text.")]


@dataclass(eq=False, repr=False)  # plain records: each generated method costs start-up time
class LogOptions:
    """The request log (``koala_cli.requestlog``)."""

    log: LogFile = None
    log_prompts: LogPrompts = False

    def path(self) -> Path | None:
        """The log file, checked before any request (a bad one is a usage error)."""
        if self.log is None or not str(self.log):
            return None
        from ..requestlog import check_log

        path = self.log.expanduser()
        check_log(path)
        return path

    def write(
        self,
        path: Path | None,
        request: "Logged",
        *,
        started: float,
        elapsed_s: float,
        exit_status: int,
        chars_out: int = 0,
        usage: "Mapping[str, object] | None" = None,
    ) -> None:
        """Append one request's line; a log that cannot be written is a notice, not a failure."""
        if path is None:
            return
        from ..errors import KoalaError
        from ..requestlog import append_record, log_record
        from .stdio import notice

        link = request.link
        record = log_record(
            time=started,
            command=request.command,
            profile=request.profile,
            provider=link.provider.__name__.lower(),
            model=link.provider.get_model(request.model),
            base_url=link.base_url or link.provider.url,
            chars_in=len(request.prompt) + len(request.system or ""),
            chars_out=chars_out,
            usage=usage,
            elapsed_s=elapsed_s,
            exit_status=exit_status,
            prompt=request.prompt if self.log_prompts else None,
        )
        try:
            append_record(path, record)
        except KoalaError as exc:
            notice(str(exc))

    def write_outcome(self, path: Path | None, request: "Logged", outcome: Any, since: tuple[float, float]) -> None:
        """The line of one ask or chat turn, from its guarded run's ``Outcome``; ``since``:
        its start as ``(time.time(), time.monotonic())``."""
        if path is None:
            return
        import time

        reply = outcome.value if outcome.error is None and outcome.signal is None else None
        self.write(
            path,
            request,
            started=since[0],
            elapsed_s=time.monotonic() - since[1],
            exit_status=outcome_status(outcome),
            chars_out=reply.chars if reply is not None else 0,
            usage=getattr(reply, "usage", None),
        )


@dataclass(frozen=True)
class Logged:
    """What the log says of a request besides how it went."""

    command: str
    profile: str | None
    link: "Connection"
    model: str
    prompt: str
    system: str | None


def outcome_status(outcome: Any) -> int:
    """The exit status a guarded run's ``Outcome`` stands for (for the request log)."""
    from ..errors import ExitStatus, KoalaError

    if outcome.signal is not None:
        return int(ExitStatus.for_signal(outcome.signal))
    if isinstance(outcome.error, KoalaError):
        return int(outcome.error.exit_status)
    return int(ExitStatus.SIGPIPE) if outcome.error is not None else 0
