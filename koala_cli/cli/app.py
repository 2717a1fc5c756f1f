"""The ``koala`` Typer app: the root command; each subcommand is built when it is used.

Building a command (importing its module, turning its signature into Click parameters) costs
start-up time, so the root group holds ``LazyCommands``: ``koala ask`` builds ``ask`` only,
and ``koala --help`` lists the commands from ``SHORT_HELP`` and builds none.  Iterating the
commands (the completion scripts do) builds them all.
"""

import sys
from collections.abc import Callable, Iterator, MutableMapping
from importlib import import_module
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import exit_status_help

#: The first line of each command's help, as `koala --help` lists it (a test keeps them equal).
SHORT_HELP = {
    "ask": "Ask a question and stream the reply to stdout.",
    "chat": "Talk with the service: replies stream as they come.",
    "batch": "Run many prompts concurrently; write one NDJSON result a line.",
    "models": "List the models of a provider, one a line.",
    "completion": "Print a completion script for SHELL (bash, zsh or fish).",
    "roles": "List the roles: NAME for each <config dir>/roles/NAME.md (used with -r NAME).",
    "history": "Work with JSONL history files.",
    "config": "Show the config file and its profiles (koala never writes it).",
}


def _command(name: str, *, epilog: str | None = None, profiled: bool = False) -> Callable[[], Any]:
    """A factory for the command ``name``: its module's function ``name`` with its ``HELP``."""

    def build() -> Any:
        module = import_module(f".{name}", __package__)
        sub = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
        options: dict[str, Any] = {"help": module.HELP, "epilog": epilog}
        if profiled:
            from .settings import ProfiledCommand

            options["cls"] = ProfiledCommand
        if name == "batch":
            options["epilog"] = module.EPILOG
        sub.command(name, **options)(getattr(module, name))
        return typer.main.get_command(sub)

    return build


def _history() -> Any:
    from . import history

    group = typer.Typer(help=SHORT_HELP["history"], rich_markup_mode=None, no_args_is_help=True, add_completion=False)
    group.command("show", help=history.SHOW_HELP)(history.show)
    group.command("last", help=history.LAST_HELP)(history.last)
    command = typer.main.get_command(group)
    command.name = "history"
    return command


def _config() -> Any:
    from . import config

    command = typer.main.get_command(config.app)
    command.name = "config"
    return command


FACTORIES: dict[str, Callable[[], Any]] = {
    "ask": _command("ask", epilog=exit_status_help(), profiled=True),
    "chat": _command("chat", epilog=exit_status_help(), profiled=True),
    "batch": _command("batch", profiled=True),
    "models": _command("models", profiled=True),
    "completion": _command("completion"),
    "roles": _command("roles"),
    "history": _history,
    "config": _config,
}


class LazyCommands(MutableMapping[str, Any]):
    """Subcommands built on first use."""

    def __init__(self, factories: dict[str, Callable[[], Any]]) -> None:
        self.factories = dict(factories)
        self.built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.built:
            self.built[name] = self.factories[name]()  # KeyError for an unknown name
        return self.built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self.built[name] = command
        self.factories.setdefault(name, lambda: command)

    def __delitem__(self, name: str) -> None:
        del self.factories[name]
        self.built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.factories)

    def __len__(self) -> int:
        return len(self.factories)


class LazyGroup(TyperGroup):
    """The root group: commands from ``FACTORIES``, listed in the help without being built."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(FACTORIES)

    def invoke(self, ctx: Any) -> Any:
        from .exits import reported_interrupt

        with reported_interrupt(bool((ctx.obj or {}).get("debug"))):  # a subcommand's parsing and run
            return super().invoke(ctx)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        limit = formatter.width - 6 - max(len(name) for name in SHORT_HELP)
        rows = []
        for name in self.list_commands(ctx):
            text = SHORT_HELP[name]
            rows.append((name, text if len(text) <= limit else text[: max(limit - 3, 0)].rstrip() + "..."))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    name="koala",
    help="koala: ask the koala.sh chat service from the shell. See 'koala COMMAND --help'.",
    epilog=exit_status_help(),
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=LazyGroup,
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
