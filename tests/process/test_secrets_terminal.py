"""Issue 8, "Secrets never printed": data on a terminal, so through the real `koala` command
with a pseudo-terminal as its stdout (the rest of issue 8's secrets tests run in process, in
tests/cli/test_secrets.py).  JSON is inert there too.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import KOALA, WAIT
from standin import Script, StandIn, sse

OSC = "\x1b]0;pwned\x07"  # retitles a terminal


def run_on_a_terminal(args: list[str], stdin: bytes = b"") -> tuple[int, bytes]:
    """koala with stdout a pseudo-terminal (stdin and stderr pipes); what the terminal got."""
    import pty
    import select

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([*KOALA, *args], stdin=subprocess.PIPE, stdout=slave, stderr=subprocess.PIPE)
        os.close(slave)
        slave = -1
        proc.stdin.write(stdin)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        seen = b""
        while select.select([master], [], [], WAIT)[0]:
            try:
                piece = os.read(master, 65536)
            except OSError:  # EIO: koala closed the terminal
                break
            if not piece:
                break
            seen += piece
        proc.stderr.read()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        return proc.wait(timeout=WAIT), seen
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


C1 = "\u009b2J"  # CSI as one C1 character: erases the screen on terminals that take 8-bit controls


def test_dry_run_of_a_hostile_history_is_inert_on_a_terminal(tmp_path: Path) -> None:
    history = tmp_path / "chat.jsonl"
    history.write_text(f'{{"role":"user","content":"a{C1}"}}\n{{"role":"assistant","content":"b\\u007f"}}\n')
    for json_flag in ([], ["--json"]):
        status, seen = run_on_a_terminal(["ask", "--dry-run", *json_flag, "-H", str(history), "hi"])
        assert status == 0, seen
        assert C1.encode() not in seen and b"\x7f" not in seen, seen
        assert b"2J" in seen


def test_batch_results_are_inert_on_a_terminal(server: StandIn) -> None:
    server.default = Script([sse(f"x{C1}y\x7f", done=True)])
    status, seen = run_on_a_terminal(["batch", "--lines", "--base-url", server.base_url], stdin=b"hi\n")
    assert status == 0, seen
    assert C1.encode() not in seen and b"\x7f" not in seen, seen
    assert b"2J" in seen


def test_dry_run_of_a_hostile_base_url_is_inert_on_a_terminal() -> None:
    for json_flag in ([], ["--json"]):
        status, seen = run_on_a_terminal(["ask", "--dry-run", *json_flag, "--base-url", f"http://h/{OSC}", "hi"])
        assert status == 0, seen
        assert b"\x1b" not in seen and b"\x07" not in seen, seen
        assert b"pwned" in seen
