"""The ``koala`` command: the Typer app, its subcommands, and the process entry point.

Only this module and ``commands/`` import Typer or touch stdin, stdout, the environment and
the exit status.  A request's imports (httpx, anyio, the providers) happen inside the
commands, so ``koala --version`` and ``--help`` cost little more than importing Typer.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer

from . import __version__
from .commands import ask, batch, chat, info
from .commands._shared import EXIT_STATUS_HELP, SIGPIPE_STATUS, silence_stdout

app = typer.Typer(
    name="koala",
    help="koala: ask the koala.sh chat service from the shell. See 'koala COMMAND --help'.",
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


app.command("ask", help=ask.HELP, epilog=EXIT_STATUS_HELP)(ask.ask)
app.command("chat", help=chat.HELP, epilog=EXIT_STATUS_HELP)(chat.chat)
app.command("batch", help=batch.HELP, epilog=batch.EPILOG)(batch.batch)
app.command("models", help=info.MODELS_HELP)(info.models)
app.command("completion", help=info.COMPLETION_HELP)(info.completion)
history_app = typer.Typer(help="Work with JSONL history files.", rich_markup_mode=None, no_args_is_help=True)
history_app.command("show", help=info.HISTORY_SHOW_HELP)(info.history_show)
app.add_typer(history_app, name="history")

_ClickUsageError: type[Exception] = typer.BadParameter.__mro__[1]  # Typer's vendored click UsageError


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: click's multi-line usage errors become one ``koala: error:`` line, exit 2."""
    command = typer.main.get_command(app)
    try:
        status = command.main(args=argv, prog_name="koala", standalone_mode=False)
    except _ClickUsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `koala history`: its help, on stderr
            sys.stderr.write(exc.format_message() + "\n")  # type: ignore[attr-defined]
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        sys.stderr.write(f"koala: error: {exc.format_message()}{where}\n")  # type: ignore[attr-defined]
        sys.exit(2)
    except BrokenPipeError:
        silence_stdout()
        sys.exit(SIGPIPE_STATUS)
    sys.exit(status if isinstance(status, int) else 0)
