"""The root group builds a subcommand only when it is used; its listing matches the commands."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from koala_cli.cli.app import FACTORIES, SHORT_HELP, app


def test_the_listing_is_each_commands_own_first_line() -> None:
    assert list(SHORT_HELP) == list(FACTORIES)
    for name, build in FACTORIES.items():
        command = build()
        assert command.name == name
        assert command.get_short_help_str(limit=1000) == SHORT_HELP[name], name


def test_every_command_is_reachable_and_iterating_builds_them() -> None:
    group = typer.main.get_command(app)
    assert group.list_commands(None) == list(FACTORIES)  # type: ignore[attr-defined,arg-type]
    assert {name: cmd.name for name, cmd in group.commands.items()} == {n: n for n in FACTORIES}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "absent"), [(["--help"], "koala_cli.cli.ask"), (["ask", "--help"], "koala_cli.cli.chat")]
)
def test_help_builds_only_what_it_shows(args: list[str], absent: str) -> None:
    code = (
        "import sys\nfrom koala_cli.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\nprint(*sys.modules, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False, timeout=60)
    assert absent not in result.stderr.decode().split()
