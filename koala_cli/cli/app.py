"""The ``koala`` Typer app: the root command and every subcommand, one module each."""

import sys
from typing import Annotated

import typer

from .. import __version__
from ..errors import exit_status_help
from . import ask, batch, chat, completion, history, models, roles
from . import config as config_command
from .settings import ProfiledCommand

app = typer.Typer(
    name="koala",
    help="koala: ask the koala.sh chat service from the shell. See 'koala COMMAND --help'.",
    epilog=exit_status_help(),
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


app.command("ask", help=ask.HELP, epilog=exit_status_help(), cls=ProfiledCommand)(ask.ask)
app.command("chat", help=chat.HELP, epilog=exit_status_help(), cls=ProfiledCommand)(chat.chat)
app.command("batch", help=batch.HELP, epilog=batch.EPILOG, cls=ProfiledCommand)(batch.batch)
app.command("models", help=models.HELP, cls=ProfiledCommand)(models.models)
app.command("completion", help=completion.HELP)(completion.completion)
app.command("roles", help=roles.HELP)(roles.roles)
history_app = typer.Typer(help="Work with JSONL history files.", rich_markup_mode=None, no_args_is_help=True)
history_app.command("show", help=history.SHOW_HELP)(history.show)
history_app.command("last", help=history.LAST_HELP)(history.last)
app.add_typer(history_app, name="history")
app.add_typer(config_command.app, name="config")
