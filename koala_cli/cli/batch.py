"""``koala batch``: many prompts, concurrently, one NDJSON result a line."""

import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import KoalaError, UsageError, exit_status_help
from .batchio import Output, count_jobs, is_regular, open_file, open_input, reader
from .exits import fail, finish
from .options import Debug, TurnOptions, expand_options
from .request import RequestOptions
from .requestlog import Logged, LogOptions
from .runner import run_guarded
from .settings import settings_of
from .stdio import notice, on_terminal

if TYPE_CHECKING:
    from ..jobs import Job, JobParser, Read
    from ..pipeline import BatchOptions, Progress

HELP = """Run many prompts concurrently; write one NDJSON result a line.

Input (FILE, or stdin with - or no FILE): JSONL, one job a line --
{"id": ..., "prompt": "...", "system"?: "...", "model"?: "...", "history"?: [messages]}
-- or, with --lines, one prompt a line (its id is the line number). A job without an id is
known by its line: its result has "line": N instead of "id". Jobs start as their lines
arrive, on one connection pool. Output, in input order unless --unordered:
{"id", "ok": true, "text", "model", "elapsed_ms", "first_chunk_ms"} or
{"id", "ok": false, "error": {"message", "exit_status"}}. A bad input line becomes an error
result with its line number; the other jobs still run.

\b
Examples:
  koala batch jobs.jsonl > results.jsonl
  printf 'hi\\nhello\\n' | koala batch --lines --concurrency 8
  koala batch jobs.jsonl --resume results.jsonl >> results.jsonl
  koala batch jobs.jsonl --rate 50/m --concurrency 8 > results.jsonl
  koala batch jobs.jsonl --shard 2/4 > results-2.jsonl     # the second of four machines
"""

EPILOG = exit_status_help("every job succeeded; otherwise the status of the first failed job in input order")

PROGRESS_INTERVAL = 0.1  # seconds between progress line updates
_RATE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*/\s*(s|m)\s*")


def parse_rate(text: str) -> float:
    """``N/s`` or ``N/m`` (requests started per second or minute) -> seconds between starts."""
    match = _RATE.fullmatch(text)
    count = float(match.group(1)) if match else 0.0
    if not match or count <= 0:
        raise UsageError(f"--rate must be N/s or N/m with N above 0 (say 10/s or 500/m), not {text!r}")
    return (1.0 if match.group(2) == "s" else 60.0) / count


InputFile = Annotated[str | None, typer.Argument(metavar="[FILE|-]", show_default=False, hidden=True)]
Lines = Annotated[bool, typer.Option("--lines", help="Plain text input: one prompt a line.")]
Concurrency = Annotated[
    int, typer.Option("--concurrency", metavar="N", help="Requests in flight (and connections) at most.")
]
Unordered = Annotated[bool, typer.Option("--unordered", help="Write results as they complete.")]
Resume = Annotated[Path | None, typer.Option("--resume", metavar="OUT", help="Skip jobs with an ok result in OUT.")]
Rate = Annotated[
    str | None, typer.Option("--rate", metavar="N/s|N/m", help="Start at most N requests a second or a minute.")
]
ShardOption = Annotated[
    str | None, typer.Option("--shard", metavar="K/N", help="Run only shard K of N (stable: by job id).")
]


@expand_options
def batch(
    ctx: typer.Context,
    file: InputFile = None,
    lines: Lines = False,
    concurrency: Concurrency = 4,
    unordered: Unordered = False,
    resume: Resume = None,
    rate: Rate = None,
    shard: ShardOption = None,
    turn: TurnOptions = TurnOptions(),
    request: RequestOptions = RequestOptions(),
    debug: Debug = False,
) -> None:
    from ..jobs import JobParser, Shard
    from ..pipeline import BatchOptions

    try:
        if concurrency < 1:
            raise UsageError(f"--concurrency must be 1 or more, not {concurrency}")
        settings = settings_of(ctx)
        options = BatchOptions(
            model=turn.model or "",
            system=turn.system_text(),
            connection=request.resolve(settings),
            concurrency=concurrency,
            ordered=not unordered,
            interval=None if rate is None else parse_rate(rate),
        )
        chosen = None if shard is None else Shard.parse(shard)
        reports = _Reports(request.logging, request.logging.path(), settings.profile, options)
        name, fd = open_input(file)
        done_fd = open_file(resume) if resume is not None and resume.exists() else None
    except KoalaError as exc:
        fail(exc, None, debug)

    async def work() -> int:
        from ..jobs import done_keys

        done = await done_keys(reader(done_fd, str(resume))) if done_fd is not None else None
        parser = JobParser(name, lines=lines, shard=chosen, done=done)
        return await _run(reader(fd, name), parser, reports, count=(file or "") if is_regular(fd) else None)

    outcome = run_guarded(work)
    reports.end()
    finish(outcome, None, debug)
    raise typer.Exit(outcome.value or 0)


async def _run(read: "Read", parser: "JobParser", reports: "_Reports", *, count: str | None) -> int:
    """The jobs of ``read`` run, their results on stdout; alongside, on a terminal, the jobs
    of a regular input file counted for the progress line's total."""
    import anyio

    from ..pipeline import run_batch

    async with anyio.create_task_group() as group:
        if reports.show_progress and count is not None:
            group.start_soon(count_jobs, count, reports.progress)
        status = await run_batch(
            read,
            parser,
            reports.options,
            write=Output(sys.stdout.buffer, on_terminal()).write,
            progress=reports.progress,
            on_progress=reports.on_progress,
            notify=notice,
            on_result=reports.on_result,
        )
        group.cancel_scope.cancel()
    return status


class _Reports:
    """What a batch says besides its results: the progress line (stderr, on a terminal
    only) and a line per request in the request log (``--log``)."""

    def __init__(self, logging: LogOptions, log: Path | None, profile: str | None, options: "BatchOptions") -> None:
        from ..pipeline import Progress

        self.logging, self.log, self.profile, self.options = logging, log, profile, options
        self.show_progress = sys.stderr.isatty()
        self.progress = Progress()
        self.shown = 0.0

    def on_progress(self, progress: "Progress") -> None:
        now = _now()
        if self.show_progress and now - self.shown >= PROGRESS_INTERVAL:
            self.shown = now
            sys.stderr.write(f"\r\x1b[Kkoala: {progress.line()}")
            sys.stderr.flush()

    def on_result(self, job: "Job", result: dict[str, Any]) -> None:
        if self.log is None:
            return
        elapsed = (result.get("elapsed_ms") or 0) / 1000
        options = self.options
        what = Logged(
            "batch",
            self.profile,
            options.connection,
            result.get("model") or job.model or options.model,
            job.prompt,
            job.system if job.system is not None else options.system,
        )
        self.logging.write(
            self.log,
            what,
            started=time.time() - elapsed,
            elapsed_s=elapsed,
            exit_status=0 if result.get("ok") else int(result.get("error", {}).get("exit_status", 1)),
            chars_out=len(result.get("text") or ""),
            usage=result.get("usage"),
        )

    def end(self) -> None:
        if self.show_progress:
            sys.stderr.write(f"\r\x1b[Kkoala: {self.progress.line()}\n")


def _now() -> float:
    import time

    return time.monotonic()
