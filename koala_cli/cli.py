"""The ``koala`` command: the only module that imports Typer, touches stdin/stdout/environ or exits.

Everything a request needs (httpx, anyio, the provider) is imported inside the command, so
``koala --version`` and ``--help`` cost little more than importing Typer.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from . import __version__
from .errors import KoalaError, UsageError
from .models import DEFAULT_MODEL

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .output import Writer

EXIT_STATUS_HELP = """\b
Exit status:
  0    the reply arrived complete
  1    internal error
  2    usage or bad input: arguments, empty prompt, stdin not UTF-8, bad history file
  3    network: cannot connect, DNS, proxy, timeout, connection dropped mid-reply
  4    the service answered an HTTP error (or a Cloudflare challenge)
  5    protocol: the answer is not the expected event stream
  130  interrupted (SIGINT); 143 terminated (SIGTERM); 141 stdout closed"""

ASK_HELP = """Ask koala.sh a question and stream the reply to stdout.

The prompt is the PROMPT words joined by spaces. When stdin is not a terminal its text is
read too (trailing newlines removed); with both, stdin comes first, then a blank line, then
the words. The reply is written as it arrives; with --json, as NDJSON records.

\b
Examples:
  echo "hi" | koala ask
  koala ask "Translate to French: good morning"
  cat notes.txt | koala ask "summarise in 3 bullets"
  koala ask -H chat.jsonl "my name is Ann"
  koala ask --json "hi" | jq -j 'select(.type=="chunk").text'
"""

SIGPIPE_STATUS = 128 + 13

app = typer.Typer(
    name="koala",
    help="koala: ask the koala.sh chat service from the shell. See 'koala ask --help'.",
    epilog=EXIT_STATUS_HELP,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"koala {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """koala: ask the koala.sh chat service from the shell."""
    if ctx.invoked_subcommand is None:  # a bare `koala`: usage on stderr, like jq
        sys.stderr.write(ctx.get_help() + "\n")
        raise typer.Exit(2)


@app.command(help=ASK_HELP, epilog=EXIT_STATUS_HELP, no_args_is_help=False)
def ask(
    prompt: Annotated[list[str] | None, typer.Argument(metavar="PROMPT", show_default=False, hidden=True)] = None,
    model: Annotated[
        str, typer.Option("-m", "--model", metavar="MODEL", envvar="KOALA_MODEL", help="Model name.")
    ] = DEFAULT_MODEL,
    system: Annotated[
        str | None, typer.Option("-s", "--system", metavar="TEXT", help="System instruction for this turn (not saved).")
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option(
            "-H", "--history", metavar="FILE", help="JSONL history: read prior turns, append this one on success."
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Write NDJSON records (start, chunk..., done or error).")
    ] = False,
    base_url: Annotated[
        str,
        typer.Option(
            "--base-url", metavar="URL", envvar="KOALA_BASE_URL", help="Server to ask; /api/gpt/ is appended."
        ),
    ] = "https://koala.sh",
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", metavar="SECONDS", help="Longest wait to connect, or for the next bytes of the reply."
        ),
    ] = 60.0,
    max_time: Annotated[
        float | None,
        typer.Option("--max-time", metavar="SECONDS", help="Longest time for the whole reply (default: none)."),
    ] = None,
    retries: Annotated[
        int,
        typer.Option(
            "--retries", metavar="N", help="Retries before the first byte (429, 502-504, connect errors); 0 disables."
        ),
    ] = 3,
    proxy: Annotated[
        str | None,
        typer.Option(
            "--proxy", metavar="URL", help="HTTP(S) or SOCKS proxy (HTTPS_PROXY and NO_PROXY are honoured too)."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            metavar="KEY",
            envvar="KOALA_API_KEY",
            show_envvar=True,
            help="Send 'Authorization: Bearer KEY'.",
        ),
    ] = None,
    web_search: Annotated[
        bool, typer.Option("--web-search", help="Let the service search the web (Flag-Real-Time-Data).")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", envvar="KOALA_DEBUG", help="Show a traceback with errors.")] = False,
) -> None:
    from .ask import AskOptions
    from .ask import ask as run_ask
    from .output import JsonWriter, TextWriter

    stdout = sys.stdout.buffer
    writer: Writer = JsonWriter(stdout) if json_output else TextWriter(stdout, sanitize=stdout.isatty())
    try:
        options = AskOptions(
            prompt=_prompt(prompt or []),
            model=model,
            system=system,
            history=history,
            base_url=_base_url(base_url),
            timeout=_positive("--timeout", timeout),
            max_time=None if max_time is None else _positive("--max-time", max_time),
            proxy=proxy,
            api_key=api_key,
            web_search=web_search,
            retries=_at_least_zero("--retries", retries),
        )
    except KoalaError as exc:
        _fail(exc, writer, debug)
    _finish(lambda: run_ask(options, writer, _notice), writer, debug)


def _notice(message: str) -> None:
    sys.stderr.write(f"koala: {message}\n")
    sys.stderr.flush()


def _prompt(words: list[str]) -> str:
    """stdin (when it is not a terminal), a blank line, then the words."""
    stdin_text = _read_stdin()
    if stdin_text is None and not words:
        raise UsageError("no prompt: give it as arguments or on standard input (see 'koala ask --help')")
    prompt = "\n\n".join(part for part in (stdin_text, " ".join(words)) if part)
    if not prompt.strip():
        raise UsageError("empty prompt: nothing to ask")
    return prompt


def _read_stdin() -> str | None:
    stream = sys.stdin
    if stream is None:
        return None
    try:
        if stream.isatty():
            return None
        data = stream.buffer.read()
    except (OSError, ValueError):
        return None  # closed or unusable stdin counts as none
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"standard input is not valid UTF-8 (byte {exc.start})") from None
    return text.rstrip("\r\n") or None


def _base_url(url: str) -> str:
    if not url.lower().startswith(("http://", "https://")):
        raise UsageError(f"--base-url must start with http:// or https://, not {url!r}")
    return url


def _positive(option: str, value: float) -> float:
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{option} must be a positive number of seconds, not {value:g}")
    return value


def _at_least_zero(option: str, value: int) -> int:
    if value < 0:
        raise UsageError(f"{option} must be 0 or more, not {value}")
    return value


def _finish(work: Callable[[], Awaitable[object]], writer: Writer, debug: bool) -> NoReturn:
    """Run the request under signal watch and turn its outcome into an exit status."""
    import anyio

    caught: list[int] = []
    failure: list[BaseException] = []

    async def watch(scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                caught.append(signum)
                scope.cancel()
                return

    async def main() -> None:
        async with anyio.create_task_group() as group:
            await group.start(watch, group.cancel_scope)
            try:
                await work()
            except (KoalaError, BrokenPipeError) as exc:
                failure.append(exc)
            finally:
                group.cancel_scope.cancel()

    try:
        anyio.run(main)
    except KeyboardInterrupt:  # before the signal watch was in place
        caught.append(signal.SIGINT)
    if caught:
        name = signal.Signals(caught[0]).name
        _fail(_Interrupted(f"interrupted by {name}", 128 + caught[0]), writer, debug)
    if failure:
        _fail(failure[0], writer, debug)
    raise typer.Exit(0)


class _Interrupted(KoalaError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.exit_status = status


def _fail(exc: BaseException, writer: Writer, debug: bool) -> NoReturn:
    """The one place where errors become a message and an exit status."""
    if isinstance(exc, BrokenPipeError):
        _silence_stdout()
        raise typer.Exit(SIGPIPE_STATUS)
    assert isinstance(exc, KoalaError)
    status = exc.exit_status
    try:
        writer.error(str(exc), status)
    except BrokenPipeError:
        _silence_stdout()
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    message = str(exc) if isinstance(exc, _Interrupted) else f"error: {exc}"
    sys.stderr.write(f"koala: {message}\n")
    sys.stderr.flush()
    raise typer.Exit(status)


def _silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the exit-time flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


_ClickUsageError: type[Exception] = typer.BadParameter.__mro__[1]  # Typer's vendored click UsageError


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: click's multi-line usage errors become one ``koala: error:`` line, exit 2."""
    command = typer.main.get_command(app)
    try:
        status = command.main(args=argv, prog_name="koala", standalone_mode=False)
    except _ClickUsageError as exc:
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        sys.stderr.write(f"koala: error: {exc.format_message()}{where}\n")  # type: ignore[attr-defined]
        sys.exit(2)
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(SIGPIPE_STATUS)
    sys.exit(status if isinstance(status, int) else 0)
