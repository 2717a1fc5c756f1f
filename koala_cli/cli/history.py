"""``koala history show``: a history file as a transcript, or its validated lines."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import KoalaError, UsageError
from .exits import fail
from .options import JsonFlag
from .stdio import write_out

SHOW_HELP = """Print a history file as a readable transcript (with --json: its lines, validated)."""


def show(
    file: Annotated[Path, typer.Argument(metavar="FILE", show_default=False)],
    json_output: JsonFlag = False,
) -> None:
    from ..history import parse_history, read_history
    from ..text import json_terminal_safe, terminal_safe

    try:
        if not file.exists():
            raise UsageError(f"{file}: no such file")
        data = read_history(file)
        messages = parse_history(data, str(file))
    except KoalaError as exc:
        fail(exc, None, False)
    if json_output:  # the lines themselves, validated: blank lines, CRs and a BOM dropped
        lines = data.decode("utf-8-sig").split("\n")
        out = "".join(line.rstrip("\r") + "\n" for line in lines if line.strip())
        if sys.stdout.isatty():
            out = json_terminal_safe(out)
    else:
        turn = 0
        blocks = []
        for message in messages:
            if message["role"] == "user":
                turn += 1
            label = message["role"] if message["role"] == "system" else f"{message['role']} ({turn})"
            blocks.append(f"── {label}\n{message['content']}\n")
        out = "\n".join(blocks)
        if sys.stdout.isatty():
            out = terminal_safe(out)
    write_out(out)
