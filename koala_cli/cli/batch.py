"""``koala batch``: many prompts, concurrently, one NDJSON result a line."""

import contextlib
import io
import os
import re
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from ..errors import KoalaError, OutputError, UsageError, exit_status_help
from .connection import ConnectionOptions
from .exits import fail, finish
from .options import Debug, TurnOptions, expand_options
from .requestlog import LogOptions
from .runner import run_guarded
from .sampling import SamplingOptions
from .settings import settings_of
from .stdio import notice, on_terminal

if TYPE_CHECKING:
    from ..jobs import Job, Read
    from ..pipeline import Progress

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


@expand_options
def batch(
    ctx: typer.Context,
    file: Annotated[str | None, typer.Argument(metavar="[FILE|-]", show_default=False, hidden=True)] = None,
    lines: Annotated[bool, typer.Option("--lines", help="Plain text input: one prompt a line.")] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", metavar="N", help="Requests in flight (and connections) at most.")
    ] = 4,
    unordered: Annotated[bool, typer.Option("--unordered", help="Write results as they complete.")] = False,
    resume: Annotated[
        Path | None, typer.Option("--resume", metavar="OUT", help="Skip jobs with an ok result in OUT.")
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option("--rate", metavar="N/s|N/m", help="Start at most N requests a second or a minute."),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option("--shard", metavar="K/N", help="Run only shard K of N (stable: by job id)."),
    ] = None,
    turn: TurnOptions = TurnOptions(),
    connection: ConnectionOptions = ConnectionOptions(),
    sampling: SamplingOptions = SamplingOptions(),
    logging: LogOptions = LogOptions(),
    debug: Debug = False,
) -> None:
    from ..jobs import JobParser, Shard
    from ..pipeline import BatchOptions, Progress

    try:
        if concurrency < 1:
            raise UsageError(f"--concurrency must be 1 or more, not {concurrency}")
        settings = settings_of(ctx)
        options = BatchOptions(
            model=turn.model or "",
            system=turn.system_text(),
            connection=connection.resolve(settings, sampling=sampling),
            concurrency=concurrency,
            ordered=not unordered,
            interval=None if rate is None else parse_rate(rate),
        )
        chosen = None if shard is None else Shard.parse(shard)
        log = logging.path()
        name, fd = _input(file)
        done_fd = _open(resume) if resume is not None and resume.exists() else None
    except KoalaError as exc:
        fail(exc, None, debug)

    show_progress = sys.stderr.isatty()
    progress = Progress()
    shown = [0.0]

    def on_progress(progress: "Progress") -> None:
        now = _now()
        if show_progress and now - shown[0] >= PROGRESS_INTERVAL:
            shown[0] = now
            sys.stderr.write(f"\r\x1b[Kkoala: {progress.line()}")
            sys.stderr.flush()

    def on_result(job: "Job", result: dict[str, Any]) -> None:
        """Each request sent, into the request log (--log)."""
        if log is None:
            return
        elapsed = (result.get("elapsed_ms") or 0) / 1000
        logging.write(
            log,
            command="batch",
            profile=settings.profile,
            link=options.connection,
            model=result.get("model") or job.model or options.model,
            prompt=job.prompt,
            system=job.system if job.system is not None else options.system,
            started=time.time() - elapsed,
            elapsed_s=elapsed,
            exit_status=0 if result.get("ok") else int(result.get("error", {}).get("exit_status", 1)),
            chars_out=len(result.get("text") or ""),
            usage=result.get("usage"),
        )

    async def work() -> int:
        import anyio

        from ..jobs import done_keys
        from ..pipeline import run_batch

        done = await done_keys(_reader(done_fd, str(resume))) if done_fd is not None else None
        parser = JobParser(name, lines=lines, shard=chosen, done=done)
        async with anyio.create_task_group() as group:
            if show_progress and _regular(fd):
                group.start_soon(_count, file or "", progress)
            status = await run_batch(
                _reader(fd, name),
                parser,
                options,
                write=_Out(sys.stdout.buffer, on_terminal()).write,
                progress=progress,
                on_progress=on_progress,
                notify=notice,
                on_result=on_result,
            )
            group.cancel_scope.cancel()
        return status

    outcome = run_guarded(work)
    if show_progress:
        sys.stderr.write(f"\r\x1b[Kkoala: {progress.line()}\n")
    finish(outcome, None, debug)
    raise typer.Exit(outcome.value or 0)


def _now() -> float:
    import time

    return time.monotonic()


def _input(file: str | None) -> tuple[str, "int | BinaryIO | None"]:
    """The input's name and file descriptor -- or, for a standard input without one (an
    in-process test's), its stream; None for a closed stdin, read as empty."""
    if file is None or file == "-":
        stream = sys.stdin
        if stream is None:
            return "<stdin>", None
        try:
            fd = stream.fileno()
            os.fstat(fd)
        except io.UnsupportedOperation:
            return "<stdin>", stream.buffer
        except (OSError, ValueError):
            return "<stdin>", None
        if file is None and os.isatty(fd):
            raise UsageError("no input: give a FILE, or jobs on standard input (see 'koala batch --help')")
        return "<stdin>", fd
    return file, _open(Path(file))


def _open(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO with no writer must not block here
        os.set_blocking(fd, True)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{path}: is a directory")
    return fd


def _pollable(fd: int) -> bool:
    """Pipes, sockets and terminals can block a read or write: wait for them in the event
    loop (so Ctrl-C always works); files never do."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


def _regular(source: "int | BinaryIO | None") -> bool:
    return isinstance(source, int) and stat.S_ISREG(os.fstat(source).st_mode)


def _reader(source: "int | BinaryIO | None", name: str) -> "Read":
    """Up to n bytes as they come, waited for in the event loop, never in a blocking read."""
    import anyio

    fd = source if isinstance(source, int) else None
    pollable = fd is not None and _pollable(fd)

    async def read(size: int) -> bytes:
        if source is None:
            return b""
        try:
            if fd is None:  # a stream in memory
                return source.read(size)  # type: ignore[union-attr]
            while True:
                if pollable:
                    await anyio.wait_readable(fd)
                try:
                    return os.read(fd, size)
                except BlockingIOError:  # a stdin left non-blocking by whoever started koala
                    await anyio.wait_readable(fd)
        except OSError as exc:
            raise UsageError(f"{name}: cannot read: {exc.strerror or exc}") from None

    return read


class _Out:
    """NDJSON results to stdout, whole lines, as soon as they come; a pipe that is full is
    waited for in the event loop, so a stalled reader never keeps Ctrl-C from working."""

    def __init__(self, stream: BinaryIO, terminal: bool = False) -> None:
        self.stream = stream
        self.terminal = terminal  # there DEL and C1 controls in results are escaped, as JSON allows
        try:
            self.fd: int | None = stream.fileno()
        except io.UnsupportedOperation:  # a stream in memory (an in-process test's)
            self.fd = None
        self.pollable = self.fd is not None and _pollable(self.fd)

    async def write(self, results: list[dict[str, Any]]) -> None:
        import json
        import select

        import anyio

        from ..text import json_terminal_safe

        lines = (json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in results)
        data = b"".join(
            (json_terminal_safe(line) if self.terminal else line).encode("utf-8", "backslashreplace") for line in lines
        )
        view = memoryview(data)
        try:
            if self.fd is None:
                self.stream.write(data)
                self.stream.flush()
                return
            while view:
                try:
                    if self.pollable:  # a pipe with room takes 4 KiB without blocking
                        if not select.select([], [self.fd], [], 0)[1]:
                            await anyio.wait_writable(self.fd)
                        written = os.write(self.fd, view[:4096])
                    else:
                        written = os.write(self.fd, view)
                except BlockingIOError:  # a stdout left non-blocking by whoever started koala
                    await anyio.wait_writable(self.fd)
                    continue
                view = view[written:]
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write the output: {exc.strerror or exc}") from None


async def _count(path: str, progress: "Progress") -> None:
    """The number of jobs in a regular file, for the progress line's total and ETA."""
    import anyio

    def count() -> int:
        total = 0
        rest = b""
        with open(path, "rb") as source:
            while piece := source.read(1 << 20):
                parts = (rest + piece).split(b"\n")
                rest = parts.pop()
                total += sum(1 for part in parts if part.strip())
        return total + (1 if rest.strip() else 0)

    with contextlib.suppress(OSError):
        progress.total = await anyio.to_thread.run_sync(count, abandon_on_cancel=True)
