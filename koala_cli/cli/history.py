"""``koala history show``: a history file as a transcript, or its validated lines."""

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import KoalaError, UsageError
from .exits import fail, finish
from .options import JsonFlag
from .runner import run_guarded
from .stdio import notice, write_out, write_path

SHOW_HELP = """Print a history file as a readable transcript (with --json: its lines, validated).

Without FILE: the last conversation (see 'koala history last')."""

LAST_HELP = """Print the path of the last conversation, the one 'koala ask -c' continues.

It is the last history a successful 'koala ask' or 'koala chat' used, or, after a plain
'koala ask' (no -H), $XDG_STATE_HOME/koala/last.jsonl. Exit 2 when there is none."""


def last() -> None:
    from ..last import require_last, state_dir

    try:
        path = require_last(state_dir(os.environ))
    except KoalaError as exc:
        fail(exc, None, False)
    write_path(path)


def show(
    file: Annotated[Path | None, typer.Argument(metavar="[FILE]", show_default=False)] = None,
    json_output: JsonFlag = False,
) -> None:
    from functools import partial

    from ..history import parse_history, read_history, waiting
    from ..last import require_last, state_dir
    from ..text import json_terminal_safe, terminal_safe

    try:
        if file is None:
            file = require_last(state_dir(os.environ))
        if not file.exists():
            raise UsageError(f"{file}: no such file")
    except KoalaError as exc:
        fail(exc, None, False)
    # Read in a guarded loop: a lock held elsewhere is waited for, interruptibly.
    outcome = run_guarded(lambda: waiting(partial(read_history, file, wait=False), file, notice))
    finish(outcome, None, False)
    data: bytes = outcome.value
    try:
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
