"""A signal while stdout takes nothing more (a reader that stopped reading, a terminal held
with Ctrl-S) still ends koala: one line, the signal's status, nothing saved."""

import json
import os
import select
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import HISTORY_BYTES, KOALA, WAIT, history_file
from standin import Script, StandIn, sse

REPLY = [sse("x" * 4000)] * 100  # 400 kB: far more than a pipe holds


def _blocked_writing(proc: "subprocess.Popen[bytes]") -> None:
    """Wait (bounded) until the process sleeps in a write to its full stdout pipe."""
    wchan = Path(f"/proc/{proc.pid}/wchan")
    for _ in range(int(WAIT / 0.01)):
        if "pipe_write" in wchan.read_text():
            return
        assert proc.poll() is None, proc.communicate()
        select.select([], [], [], 0.01)  # polls the state; the wait is not the synchronisation
    raise AssertionError("koala never blocked writing")


def _stalled(
    args: list[str], signum: int, stdin: int | None = subprocess.DEVNULL, *, both: bool = False
) -> tuple[int, bytes, bytes]:
    """Run koala with a stdout pipe that is never read (``both``: stderr into it too, as
    ``2>&1``); signal it once it blocks there."""
    reader, writer = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    stderr = writer if both else subprocess.PIPE
    proc = subprocess.Popen([*KOALA, *args], stdin=stdin, stdout=writer, stderr=stderr, env=env)
    os.close(writer)
    try:
        _blocked_writing(proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=WAIT)
        os.set_blocking(reader, False)
        out = b""
        while chunk := _read(reader):
            out += chunk
        return proc.returncode, out, err or b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        os.close(reader)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b""


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_ask_into_a_stalled_pipe_ends_on_a_signal(
    server: StandIn, tmp_path: Path, signum: int, status: int, json_flag: list[str]
) -> None:
    path = history_file(tmp_path)
    server.push(Script(REPLY))
    args = ["ask", "--base-url", server.base_url, "--retries", "0", *json_flag, "-H", str(path), "hi"]
    returncode, out, err = _stalled(args, signum)
    assert returncode == status
    assert err == f"koala: interrupted by {signal.Signals(signum).name}\n".encode()
    if json_flag:  # whole records, then the one that was being written when stdout was let go
        *whole, _ = out.split(b"\n")
        assert [json.loads(line)["type"] for line in whole] == ["start", *["chunk"] * (len(whole) - 1)]
    else:
        assert out and set(out) == {ord("x")}  # the reply's text, nothing else
    assert path.read_bytes() == HISTORY_BYTES


def test_piped_chat_into_a_stalled_pipe_ends_on_sigint(server: StandIn, tmp_path: Path) -> None:
    path = history_file(tmp_path)
    server.push(Script(REPLY))
    reader, writer = os.pipe()
    os.write(writer, b"hi\n")
    try:
        args = ["chat", "--base-url", server.base_url, "--retries", "0", "-H", str(path)]
        returncode, _, err = _stalled(args, signal.SIGINT, stdin=reader)
    finally:
        os.close(reader)
        os.close(writer)
    assert returncode == 130
    assert err == b"koala: interrupted by SIGINT\n"
    assert path.read_bytes() == HISTORY_BYTES


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_history_show_into_a_stalled_pipe_ends_on_sigint(tmp_path: Path, json_flag: list[str]) -> None:
    path = tmp_path / "long.jsonl"
    turn = json.dumps({"role": "user", "content": "x" * 400}) + "\n"
    path.write_text(turn * 2000)  # 800 kB: far more than a pipe holds
    returncode, out, err = _stalled(["history", "show", *json_flag, str(path)], signal.SIGINT)
    assert returncode == 130
    assert err == b"koala: interrupted by SIGINT\n"
    assert out


def test_a_signal_while_the_done_record_is_stalled_saves_nothing(server: StandIn, tmp_path: Path) -> None:
    # the chunk records fit in the pipe, the done record (which repeats the text) does not:
    # the reply is not complete on stdout, so it must not count as complete anywhere
    path = history_file(tmp_path)
    server.push(Script([sse("y" * 4000)] * 10))
    args = ["ask", "--base-url", server.base_url, "--retries", "0", "--json", "-H", str(path), "hi"]
    returncode, out, err = _stalled(args, signal.SIGINT)
    assert returncode == 130
    assert err == b"koala: interrupted by SIGINT\n"
    assert b'"type":"done"' not in out.rsplit(b"\n", 1)[0]  # no whole done record
    assert path.read_bytes() == HISTORY_BYTES


def test_stderr_into_the_same_stalled_pipe_does_not_hang_the_line(server: StandIn) -> None:
    server.push(Script([sse("z" * 4096)] * 100))
    args = ["ask", "--base-url", server.base_url, "--retries", "0", "hi"]
    returncode, _, _ = _stalled(args, signal.SIGINT, both=True)
    assert returncode == 130


def test_interactive_chat_ends_when_its_stalled_stdout_is_let_go(server: StandIn, tmp_path: Path) -> None:
    server.push(Script(REPLY))
    master, slave = os.openpty()  # typed messages; the replies go into a pipe nobody reads
    os.write(master, b"hi\r")
    try:
        args = ["chat", "--base-url", server.base_url, "--retries", "0"]
        returncode, _, err = _stalled(args, signal.SIGINT, stdin=slave)
    finally:
        os.close(master)
        os.close(slave)
    assert returncode == 130  # not back at the prompt, writing every later reply into /dev/null
    assert err.endswith(b"koala: interrupted by SIGINT\n")
