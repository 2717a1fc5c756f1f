"""Issue 8, "No tracebacks, whatever the environment", through the real `koala` command.

Closed and unusable stdin, non-UTF-8 terminal encodings, stdout that fills up while an earlier
failure is reported, `--version` into /dev/full or a closed pipe, stderr whose reader has gone,
a stdout left non-blocking, almost no file descriptors.  (An internationalised host in
--base-url and a non-ASCII key need no process: tests/cli/test_international.py.)
"""

from __future__ import annotations

import contextlib
import os
import pty
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import KOALA, WAIT, no_traceback
from standin import DROP, Repeat, Script, StandIn, sse

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL


# --- a closed or unusable stdin ------------------------------------------------------------


def run_with_stdin(args: list[str], how: str, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """Run koala with fd 0 closed ("closed") or open for writing only ("write-only")."""
    target = tmp_path / "stdin-target"

    def setup() -> None:
        if how == "closed":
            os.close(0)
        else:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
            os.dup2(fd, 0)
            os.close(fd)

    return subprocess.run([*KOALA, *args], stdout=PIPE, stderr=PIPE, timeout=WAIT, check=False, preexec_fn=setup)


@pytest.mark.parametrize("how", ["closed", "write-only"])
@pytest.mark.parametrize(
    ("command", "status"),
    [(["chat"], 0), (["chat", "-H", "h.jsonl"], 0), (["batch"], 0), (["batch", "--lines"], 0), (["ask", "hi"], 0)],
    ids=["chat", "chat-history", "batch", "batch-lines", "ask-words"],
)
def test_closed_or_unusable_stdin_reads_as_empty(
    server: StandIn, tmp_path: Path, how: str, command: list[str], status: int
) -> None:
    args = [a if a != "h.jsonl" else str(tmp_path / a) for a in command]
    result = run_with_stdin([*args, "--base-url", server.base_url], how, tmp_path)
    no_traceback(result.stderr)
    assert b"cannot write" not in result.stderr
    assert result.returncode == status, result.stderr
    if command[0] == "ask":
        assert result.stdout == b"Hello, world\n"
    else:
        assert server.requests == []


@pytest.mark.parametrize("how", ["closed", "write-only"])
def test_ask_without_words_and_unusable_stdin_is_one_usage_line(tmp_path: Path, how: str) -> None:
    result = run_with_stdin(["ask"], how, tmp_path)
    no_traceback(result.stderr)
    assert result.returncode == 2
    assert result.stderr.startswith(b"koala: error: no prompt")


# --- non-UTF-8 terminal encodings ----------------------------------------------------------


@contextlib.contextmanager
def on_a_terminal(args: list[str], env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """koala on a pseudo-terminal; yields (pid, master fd); the process is gone afterwards."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.execvpe(KOALA[0], [*KOALA, *args], env)
        finally:
            os._exit(127)
    try:
        yield pid, fd
    finally:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        os.close(fd)


def read_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 20.0) -> bool:
    """Read the terminal into ``seen`` until ``needle`` is in it (or EOF, or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return False
        try:
            piece = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not piece:
            return False
        seen += piece
    return True


def wait_status(pid: int, fd: int, seen: bytearray, timeout: float = 20.0) -> int:
    read_until(fd, b"\x00never\x00", seen, timeout=timeout)  # drain until the child is gone
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        select.select([], [], [], 0.05)
    raise AssertionError("koala did not end")


@pytest.mark.parametrize(
    "encoding_env",
    [{"PYTHONIOENCODING": "latin-1"}, {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}],
    ids=["latin-1", "C-locale"],
)
def test_chat_continuation_prompt_on_a_non_utf8_terminal(server: StandIn, encoding_env: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LANG", "LC_CTYPE", "LC_ALL", "PYTHONUTF8")}
    env.update({k: v for k, v in encoding_env.items() if v})
    env.pop("PYTHONIOENCODING", None) if not encoding_env.get("PYTHONIOENCODING") else None
    seen = bytearray()
    with on_a_terminal(["chat", "--base-url", server.base_url], env) as (pid, fd):
        assert read_until(fd, b"> ", seen), bytes(seen)
        os.write(fd, b"first line\\\r")
        assert read_until(fd, b"... ", seen), bytes(seen)  # the ASCII fallback of the continuation prompt
        os.write(fd, b"second\r")
        assert read_until(fd, b"Hello, world\r\n> ", seen), bytes(seen)  # the reply, then the next prompt
        os.write(fd, b"\x04")
        status = wait_status(pid, fd, seen)
    no_traceback(bytes(seen))
    assert status == 0, bytes(seen)
    assert server.requests[0].json()["input"] == "first line\nsecond"


def test_chat_in_a_c_locale_reads_what_is_typed_as_utf8(server: StandIn) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LANG", "LC_CTYPE", "PYTHONIOENCODING")}
    env.update({"LC_ALL": "C", "PYTHONUTF8": "0"})
    seen = bytearray()
    with on_a_terminal(["chat", "--base-url", server.base_url], env) as (pid, fd):
        assert read_until(fd, b"> ", seen), bytes(seen)
        os.write(fd, "café\r".encode())
        assert read_until(fd, b"Hello, world\r\n> ", seen), bytes(seen)
        os.write(fd, b"\x04")
        status = wait_status(pid, fd, seen)
    no_traceback(bytes(seen))
    assert status == 0, bytes(seen)
    assert server.requests[0].json()["input"] == "café"


# --- stdout that fills up while an earlier failure is reported ------------------------------


def file_size_limit(limit: int) -> Callable[[], None]:
    def setup() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return setup


@pytest.mark.parametrize(
    ("json_flag", "room"),
    [
        ([], len(b"Hello")),
        (["--json"], len(b'{"type":"start","model":"gpt-4o-mini"}\n{"type":"chunk","text":"Hello"}\n')),
    ],
    ids=["raw", "json"],
)
def test_full_stdout_while_reporting_a_dropped_connection(
    server: StandIn, tmp_path: Path, json_flag: list[str], room: int
) -> None:
    server.push(Script([sse("Hello"), DROP], framing="chunked"))
    out = tmp_path / "out"
    with out.open("wb") as stdout:
        result = subprocess.run(
            [*KOALA, "ask", "--base-url", server.base_url, "--retries", "0", *json_flag, "hi"],
            stdin=DEVNULL,
            stdout=stdout,
            stderr=PIPE,
            timeout=WAIT,
            check=False,
            preexec_fn=file_size_limit(room),
        )
    no_traceback(result.stderr)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.decode().splitlines()
    assert any("dropped" in line for line in lines), lines
    assert all(line.startswith("koala: ") for line in lines), lines
    assert out.read_bytes().startswith(b"Hello" if not json_flag else b'{"type":"start"')


def test_full_stdout_while_chat_reports_a_dropped_connection(server: StandIn, tmp_path: Path) -> None:
    server.push(Script([sse("Hello"), DROP], framing="chunked"))
    out = tmp_path / "out"
    with out.open("wb") as stdout:
        result = subprocess.run(
            [*KOALA, "chat", "--base-url", server.base_url, "--retries", "0"],
            input=b"hi\n",
            stdout=stdout,
            stderr=PIPE,
            timeout=WAIT,
            check=False,
            preexec_fn=file_size_limit(len(b"Hello")),
        )
    no_traceback(result.stderr)
    assert result.returncode == 3, result.stderr
    assert b"dropped" in result.stderr
    assert out.read_bytes() == b"Hello"


# --- --version (and help) into /dev/full or a closed pipe ----------------------------------


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["ask", "--help"], ["history", "show", "--help"]])
def test_into_dev_full_is_one_line_and_status_1(args: list[str]) -> None:
    with open("/dev/full", "wb") as full:
        result = subprocess.run([*KOALA, *args], stdin=DEVNULL, stdout=full, stderr=PIPE, timeout=WAIT, check=False)
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1, result.stderr
    assert result.stderr.startswith(b"koala: error: cannot write the output"), result.stderr


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["ask", "--help"], ["history", "show", "--help"]])
def test_into_a_closed_pipe_is_quiet_141(args: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [*KOALA, *args], stdin=DEVNULL, stdout=write_end, stderr=PIPE, timeout=WAIT, check=False
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr
    assert result.stderr == b""


# --- stderr whose reader has gone ----------------------------------------------------------


def run_stderr(args: list[str], *, gone: bool, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """stderr a pipe whose reader has gone (``gone``), or closed (`2>&-`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)

    def close_stderr() -> None:
        os.close(2)

    try:
        return subprocess.run(
            [*KOALA, *args],
            input=stdin,
            stdout=PIPE,
            stderr=write_end if gone else None,
            timeout=WAIT,
            check=False,
            preexec_fn=None if gone else close_stderr,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    ("case", "status"),
    [("retry-then-ok", 0), ("stats", 0), ("refused", 3), ("http-400", 4), ("usage", 2), ("batch-failed-job", 4)],
)
def test_stderr_reader_gone_keeps_the_exit_status(server: StandIn, case: str, status: int) -> None:
    base = ["--base-url", server.base_url]
    plain = Script([b"x"], status=400, reason="Bad Request", headers={"Content-Type": "text/plain"})
    busy = Script([b""], status=503, reason="Busy", headers={"Content-Type": "text/plain"})
    args = {
        "retry-then-ok": ["ask", *base, "--retries", "1", "hi"],
        "stats": ["ask", *base, "--stats", "hi"],
        "refused": ["ask", "--base-url", "http://127.0.0.1:9", "--retries", "0", "hi"],
        "http-400": ["ask", *base, "--retries", "0", "hi"],
        "usage": ["ask", "--timeout", "-1", "hi"],
        "batch-failed-job": ["batch", "--lines", *base, "--retries", "0"],
    }[case]
    for gone in (False, True):  # 2>&- first: the reference
        if case == "retry-then-ok":
            server.push(busy)
        elif case in ("http-400", "batch-failed-job"):
            server.push(plain)
        result = run_stderr(args, gone=gone, stdin=b"hi\n")
        assert result.returncode == status, (gone, result.returncode)
        if status == 0 and case != "batch-failed-job":
            assert result.stdout == b"Hello, world\n"


# --- a stdout left non-blocking by whoever started koala ------------------------------------


def test_non_blocking_stdout_loses_nothing(server: StandIn) -> None:
    """A parent may leave O_NONBLOCK on a shared pipe: a full pipe must mean waiting, not exit 1."""
    import fcntl
    import termios

    server.push(Script([Repeat(sse("x" * 1000), 300)]))
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    proc = subprocess.Popen(
        [*KOALA, "ask", "--base-url", server.base_url, "--retries", "0", "hi"],
        stdin=DEVNULL,
        stdout=write_end,
        stderr=PIPE,
    )
    os.close(write_end)
    try:
        deadline = time.monotonic() + WAIT
        waiting, before = bytearray(4), -1
        while time.monotonic() < deadline:  # until the pipe is full and stays so: koala met EAGAIN
            fcntl.ioctl(read_end, termios.FIONREAD, waiting)
            now = int.from_bytes(waiting, sys.byteorder)
            if (now >= 60_000 and now == before) or proc.poll() is not None:
                break
            before = now
            select.select([], [], [], 0.05)
        data = b""
        while piece := os.read(read_end, 1 << 16):
            data += piece
        _, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
        os.close(read_end)
    no_traceback(err)
    assert proc.returncode == 0, err
    assert data == b"x" * 300_000 + b"\n"


# --- almost no file descriptors -------------------------------------------------------------


@pytest.mark.parametrize("limit", [5, 6, 7, 8, 10])
def test_too_few_file_descriptors_is_one_line(limit: int) -> None:
    """Wherever the limit bites (the event loop, an import, the socket), one line, no traceback."""

    def few_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    result = subprocess.run(
        [*KOALA, "ask", "--base-url", "http://127.0.0.1:9", "--retries", "0", "hi"],
        stdin=DEVNULL,
        capture_output=True,
        timeout=WAIT,
        check=False,
        preexec_fn=few_fds,
    )
    no_traceback(result.stderr)
    assert result.returncode in (1, 3), result.stderr
    assert result.stderr.count(b"\n") == 1 and result.stderr.startswith(b"koala: error: "), result.stderr
