"""Issue 11: -e gives the editor the terminal even when koala's stdin and stdout are not it."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shlex
import sys
import time
from pathlib import Path

import pytest
from conftest import KOALA

pytestmark = [pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a pty")]

EDITOR = """\
import os, sys
open(os.environ["EDITOR_LOG"], "w").write(f"{os.isatty(0)} {os.isatty(1)}")
open(sys.argv[-1], "a").write(" edited")
"""


def test_the_editor_gets_the_terminal_with_stdin_and_stdout_piped(tmp_path: Path) -> None:
    import pty

    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR)
    log, out = tmp_path / "editor.log", tmp_path / "out.json"
    pid, master = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal; stdin and stdout are not it
        try:
            read_end, write_end = os.pipe()
            os.write(write_end, b"piped\n")
            os.close(write_end)
            os.dup2(read_end, 0)
            os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
            os.environ.update(
                EDITOR=f"{shlex.quote(sys.executable)} {shlex.quote(str(editor))}",
                EDITOR_LOG=str(log),
                KOALA_CONFIG="",
            )
            os.execv(KOALA[0], [*KOALA, "ask", "--dry-run", "--json", "-e", "words"])
        finally:
            os._exit(127)
    deadline = time.monotonic() + 60
    status: int | None = None
    try:
        while status is None and time.monotonic() < deadline:  # drain the terminal until the child ends
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):  # EIO: the child closed the terminal
                    os.read(master, 4096)
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = code
    finally:
        os.close(master)
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    assert status is not None, "koala did not finish"
    assert os.waitstatus_to_exitcode(status) == 0
    assert log.read_text() == "True True"
    assert json.loads(out.read_text())["body"]["input"] == "piped\n\nwords edited"
