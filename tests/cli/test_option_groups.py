"""Option groups (``koala_cli.cli.options.expand_options``): declared once, received as one
object.  No ``from __future__ import annotations`` here: like the CLI's, these annotations
must be objects for the decorator to see the groups."""

from dataclasses import dataclass
from typing import Annotated

import pytest
import typer
from conftest import invoke

from koala_cli.cli.options import expand_options


@dataclass(eq=False)
class Inner:
    b: Annotated[int, typer.Option("--b")] = 2


@dataclass(eq=False)
class Outer:
    a: Annotated[int, typer.Option("--a")] = 1
    inner: Inner = Inner()  # noqa: RUF009 - never used: expand_options builds each group
    c: Annotated[int, typer.Option("--c")] = 3


def test_a_nested_group_stands_in_its_place_and_reaches_the_command_built() -> None:
    import inspect

    received: list[object] = []

    @expand_options
    def command(first: int, outer: Outer = Outer(), last: int = 0) -> None:  # noqa: B008 - as above
        received.append((first, outer.a, outer.inner.b, outer.c, last))

    assert list(inspect.signature(command).parameters) == ["first", "a", "b", "c", "last"]
    command(first=0, a=10, b=20, c=30, last=40)
    assert received == [(0, 10, 20, 30, 40)]


@pytest.mark.parametrize(("debug", "traceback"), [([], False), (["--debug"], True)])
def test_an_invalid_group_is_one_usage_error_or_a_traceback_with_debug(debug: list[str], traceback: bool) -> None:
    result = invoke("ask", *debug, "--model", "bad \udcff", "--base-url", "http://127.0.0.1:9", "hi")
    assert result.returncode == 2
    assert result.stderr.decode(errors="replace").rstrip().endswith("koala: error: --model is not valid UTF-8")
    assert (b"Traceback" in result.stderr) is traceback
