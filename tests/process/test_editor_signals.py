"""Ctrl-C at the terminal goes to koala and its editor alike: the editor decides what it means
(vim cancels a command with it); koala waits for the editor instead of dying under it."""

import os
import select
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from conftest import KOALA, WAIT

EDITOR = """\
import os, signal, sys, time
signal.signal(signal.SIGINT, lambda *a: open(os.environ["EDITOR_LOG"], "a").write("SIGINT\\n"))
open(os.environ["EDITOR_LOG"], "a").write("started\\n")
go = os.environ["EDITOR_GO"]
for _ in range(6000):  # bounded: 60 s at most
    if os.path.exists(go):
        break
    time.sleep(0.01)
open(sys.argv[-1], "a").write(" edited")
"""


def _wait_for(path: Path, text: str) -> None:
    for _ in range(int(WAIT / 0.01)):
        if path.exists() and text in path.read_text():
            return
        select.select([], [], [], 0.01)  # polls the state; the wait is not the synchronisation
    raise AssertionError(f"{path} never said {text!r}")


def test_ctrl_c_while_editing_is_the_editors(tmp_path: Path) -> None:
    script, log, go = tmp_path / "editor.py", tmp_path / "editor.log", tmp_path / "go"
    script.write_text(EDITOR)
    env = {**os.environ, "EDITOR": f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"}
    env.update(EDITOR_LOG=str(log), EDITOR_GO=str(go))
    env.pop("PYTHONUNBUFFERED", None)
    proc = subprocess.Popen(
        [*KOALA, "ask", "--dry-run", "--json", "-e", "draft"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        _wait_for(log, "started")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at the terminal does
        _wait_for(log, "SIGINT")  # the editor got it and carried on
        go.touch()
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert proc.returncode == 0, err
    assert b"draft edited" in out
