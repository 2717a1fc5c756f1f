"""The ``koala`` Typer app: the root command and its subcommands, one module each.

``_shared`` holds what the subcommands have in common.  Only this package and ``cli`` import
Typer or touch stdin, stdout, the environment and the exit status.
"""

import sys
from typing import Annotated

import typer

from .. import __version__
from . import ask, batch, chat, info
from ._shared import EXIT_STATUS_HELP

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
