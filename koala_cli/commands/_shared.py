"""What the subcommands share: option declarations, settings resolution, the guarded event
loop with its signal watch, and the one place where errors become an exit status."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ..errors import KoalaError, OutputError, UsageError
from ..models import DEFAULT_MODEL

if TYPE_CHECKING:
    from ..ask import Connection
    from ..output import Writer
    from ..streaming import HTTPStreamProvider

SIGPIPE_STATUS = 141  # 128 + SIGPIPE, as a shell reports a process killed by it

EXIT_STATUS_HELP = """\b
Exit status:
  0    success
  1    internal error, or stdout cannot be written
  2    usage or bad input: arguments, empty prompt, stdin not UTF-8, bad history file
  3    network: cannot connect, DNS, proxy, timeout, connection dropped mid-reply
  4    the service answered an HTTP error (or a Cloudflare challenge)
  5    protocol: the answer is not the expected event stream
  130  interrupted (SIGINT); 143 terminated (SIGTERM); 141 stdout closed"""

# Options shared by ask, chat and batch.
Model = Annotated[str, typer.Option("-m", "--model", metavar="MODEL", envvar="KOALA_MODEL", help="Model name.")]
System = Annotated[
    str | None, typer.Option("-s", "--system", metavar="TEXT", help="System instruction (not saved in the history).")
]
Provider = Annotated[
    str,
    typer.Option("--provider", metavar="NAME", envvar="KOALA_PROVIDER", help="koala (koala.sh) or openai-compatible."),
]
BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        metavar="URL",
        envvar="KOALA_BASE_URL",
        help="Server to ask [default: https://koala.sh; openai: https://api.openai.com].",
        show_default=False,
    ),
]
Timeout = Annotated[
    float,
    typer.Option("--timeout", metavar="SECONDS", help="Longest wait to connect or for more of a reply."),
]
MaxTime = Annotated[
    float | None, typer.Option("--max-time", metavar="SECONDS", help="Longest time for a whole reply (default: none).")
]
Retries = Annotated[
    int, typer.Option("--retries", metavar="N", help="Retries before the first byte (429, 502-504, connect errors).")
]
Proxy = Annotated[
    str | None, typer.Option("--proxy", metavar="URL", help="HTTP(S) or SOCKS proxy (HTTPS_PROXY, NO_PROXY honoured).")
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        metavar="KEY",
        help="Send 'Authorization: Bearer KEY' [env: KOALA_API_KEY; openai: OPENAI_API_KEY].",
    ),
]
WebSearch = Annotated[bool, typer.Option("--web-search", help="Let the service search the web (koala.sh only).")]
Debug = Annotated[bool, typer.Option("--debug", envvar="KOALA_DEBUG", help="Show a traceback with errors.")]

DEFAULTS: dict[str, Any] = {"model": DEFAULT_MODEL, "provider": "koala", "timeout": 60.0, "retries": 3}


def load_provider(name: str) -> type[HTTPStreamProvider]:
    """The provider class for a ``--provider`` name."""
    from importlib import import_module

    from .. import PROVIDERS

    target = PROVIDERS.get(name.strip().lower())
    if target is None:
        raise UsageError(f"unknown provider {name!r} (known: {', '.join(PROVIDERS)})")
    module, _, attribute = target.partition(":")
    provider: type[HTTPStreamProvider] = getattr(import_module(f"..{module}", __package__), attribute)
    return provider


def connection(
    *,
    provider: str,
    base_url: str | None,
    timeout: float,
    max_time: float | None,
    retries: int,
    proxy: str | None,
    api_key: str | None,
    web_search: bool,
) -> Connection:
    """Settings from options and the environment, validated, in one place."""
    from urllib.parse import urlsplit

    from ..ask import Connection
    from ..text import mask_secrets

    if base_url is not None and not base_url.lower().startswith(("http://", "https://")):
        raise UsageError(f"--base-url must start with http:// or https://, not {mask_secrets(base_url)!r}")
    for option, url in (("--base-url", base_url), ("--proxy", proxy)):
        if url is not None:
            check_text(option, url)
            try:
                urlsplit(url).port  # noqa: B018 - parsing is the check: a port above 65535 raises
            except ValueError as exc:
                raise UsageError(f"{option} {mask_secrets(url)!r}: {exc}") from None
    if api_key is not None and not (api_key.isascii() and api_key.isprintable()):
        raise UsageError("the API key must be printable ASCII (it is not shown here)")
    if retries < 0:
        raise UsageError(f"--retries must be 0 or more, not {retries}")
    chosen = load_provider(provider)
    if api_key is None and chosen.api_key_env:  # each service's own key, never another's
        api_key = os.environ.get(chosen.api_key_env) or None
    return Connection(
        provider=chosen,
        base_url=base_url,
        timeout=positive("--timeout", timeout),
        max_time=None if max_time is None else positive("--max-time", max_time),
        proxy=proxy,
        api_key=api_key,
        web_search=web_search,
        retries=retries,
    )


def check_text(what: str, value: str | None) -> str | None:
    """Arguments are decoded with surrogate escapes: bytes that are not UTF-8 stop here."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{what} is not valid UTF-8") from None
    return value


def positive(option: str, value: float) -> float:
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{option} must be a positive number of seconds, not {value:g}")
    return value


def read_stdin() -> str | None:
    """stdin's text when it is not a terminal, trailing newlines removed; None for none."""
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


def write_out(text: str) -> None:
    """Data for stdout from the small commands: lone surrogates escaped, a closed pipe quiet,
    a failed write one error line."""
    from ..output import GuardedStream

    stream = GuardedStream(sys.stdout.buffer)
    try:
        stream.write(text.encode("utf-8", "backslashreplace"))
        stream.flush()
    except (BrokenPipeError, OutputError) as exc:
        fail(exc, None, False)


def notice(message: str) -> None:
    """One line on stderr, for retries and statistics."""
    sys.stderr.write(f"koala: {message}\n")
    sys.stderr.flush()


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


class Interrupted(KoalaError):
    """A signal stopped the work; the status is 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_status = 128 + signum


def finish(outcome: Outcome, writer: Writer | None, debug: bool) -> None:
    """Raise the exit for a failed outcome; return quietly for a successful one."""
    if outcome.signal is not None:
        fail(Interrupted(outcome.signal), writer, debug)
    if outcome.error is not None:
        fail(outcome.error, writer, debug)


def fail(exc: BaseException, writer: Writer | None, debug: bool) -> NoReturn:
    """The one place where errors become a message and an exit status."""
    if isinstance(exc, BrokenPipeError):
        silence_stdout()
        raise typer.Exit(SIGPIPE_STATUS)
    if not isinstance(exc, KoalaError):
        raise exc
    if isinstance(exc, OutputError):
        silence_stdout()  # nothing more can be written there, not even at exit
        writer = None
    status = exc.exit_status
    if writer is not None:
        try:
            writer.error(str(exc), status)
        except BrokenPipeError:
            silence_stdout()
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    message = str(exc) if isinstance(exc, Interrupted) else f"error: {exc}"
    sys.stderr.write(f"koala: {message}\n")
    sys.stderr.flush()
    raise typer.Exit(status)


def silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the exit-time flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
