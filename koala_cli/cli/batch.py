"""``koala batch``: many prompts, concurrently, one NDJSON result a line."""

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import KoalaError, UsageError, exit_status_help
from .exits import fail, finish
from .options import ConnectionOptions, Debug, LogOptions, SamplingOptions, TurnOptions, expand_options
from .runner import run_guarded
from .settings import settings_of
from .stdio import notice, on_terminal

if TYPE_CHECKING:
    from ..jobs import Progress

HELP = """Run many prompts concurrently; write one NDJSON result a line.

Input (FILE, or stdin with - or no FILE): JSONL, one job a line --
{"id": ..., "prompt": "...", "system"?: "...", "model"?: "...", "history"?: [messages]}
-- or, with --lines, one prompt a line (its id is the line number). Output, in input order
unless --unordered: {"id", "ok": true, "text", "model", "elapsed_ms", "first_chunk_ms"} or
{"id", "ok": false, "error": {"message", "exit_status"}}. A bad input line becomes an error
result with its line number; the other jobs still run.

\b
Examples:
  koala batch jobs.jsonl > results.jsonl
  printf 'hi\\nhello\\n' | koala batch --lines --concurrency 8
  koala batch jobs.jsonl --resume results.jsonl >> results.jsonl
"""

EPILOG = exit_status_help("every job succeeded; otherwise the status of the first failed job in input order")


@expand_options
def batch(
    ctx: typer.Context,
    file: Annotated[str | None, typer.Argument(metavar="[FILE|-]", show_default=False, hidden=True)] = None,
    lines: Annotated[bool, typer.Option("--lines", help="Plain text input: one prompt a line.")] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", metavar="N", help="Requests in flight at most.")] = 4,
    unordered: Annotated[bool, typer.Option("--unordered", help="Write results as they complete.")] = False,
    resume: Annotated[
        Path | None, typer.Option("--resume", metavar="OUT", help="Skip jobs whose id has an ok result in OUT.")
    ] = None,
    turn: TurnOptions = TurnOptions(),
    connection: ConnectionOptions = ConnectionOptions(),
    sampling: SamplingOptions = SamplingOptions(),
    logging: LogOptions = LogOptions(),
    debug: Debug = False,
) -> None:
    import json

    from ..jobs import BadJob, Progress, done_ids, parse_jobs, run_batch
    from ..output import GuardedStream
    from ..text import json_terminal_safe

    try:
        if concurrency < 1:
            raise UsageError(f"--concurrency must be 1 or more, not {concurrency}")
        settings = settings_of(ctx)
        link = connection.resolve(settings, sampling=sampling)
        system = turn.system_text()
        log = logging.path()
        name, data = _input(file)
        jobs = list(parse_jobs(data, name, lines=lines))
        if resume is not None and resume.exists():
            skip = done_ids(_read(resume).decode("utf-8", "replace"))
            jobs = [j for j in jobs if isinstance(j, BadJob) or json.dumps(j.id, sort_keys=True) not in skip]
    except KoalaError as exc:
        fail(exc, None, debug)

    out = GuardedStream(sys.stdout.buffer)
    tty = on_terminal()  # there DEL and C1 controls in results are escaped, as JSON allows
    show_progress = sys.stderr.isatty()

    sent = {json.dumps(j.id, sort_keys=True): j for j in jobs if not isinstance(j, BadJob)}

    def emit(result: dict[str, Any]) -> None:
        line = json.dumps(result, ensure_ascii=False) + "\n"
        out.write((json_terminal_safe(line) if tty else line).encode("utf-8", "backslashreplace"))
        out.flush()
        job = sent.get(json.dumps(result.get("id"), sort_keys=True)) if log is not None else None
        if job is not None and "line" not in result:  # a request was sent for it
            elapsed = (result.get("elapsed_ms") or 0) / 1000
            logging.write(
                log,
                command="batch",
                profile=settings.profile,
                link=link,
                model=result.get("model") or job.model or turn.model or "",
                prompt=job.prompt,
                system=job.system if job.system is not None else system,
                started=time.time() - elapsed,
                elapsed_s=elapsed,
                exit_status=0 if result.get("ok") else int(result.get("error", {}).get("exit_status", 1)),
                chars_out=len(result.get("text") or ""),
                usage=result.get("usage"),
            )

    def on_progress(progress: "Progress") -> None:
        if show_progress:
            sys.stderr.write(f"\r\x1b[Kkoala: {progress.line()}")
            sys.stderr.flush()

    progress = Progress()
    outcome = run_guarded(
        lambda: run_batch(
            jobs,
            model=turn.model or "",
            system=system,
            connection=link,
            concurrency=concurrency,
            ordered=not unordered,
            emit=emit,
            progress=progress,
            on_progress=on_progress,
            notify=notice,
        )
    )
    if show_progress:
        sys.stderr.write("\n")
    finish(outcome, None, debug)
    raise typer.Exit(outcome.value or 0)


def _input(file: str | None) -> tuple[str, bytes]:
    if file is None or file == "-":
        if file is None and sys.stdin is not None and sys.stdin.isatty():
            raise UsageError("no input: give a FILE, or jobs on standard input (see 'koala batch --help')")
        return "<stdin>", sys.stdin.buffer.read() if sys.stdin is not None else b""
    return file, _read(Path(file))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
