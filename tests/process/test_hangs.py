"""Nothing hangs, and signals always work: odd files, held locks and signals twice.

Every case runs the real `koala` and proves it answers at once -- or, where it must wait (a
lock another process holds), that it says so and still obeys SIGINT, SIGTERM and
``--max-time``.  Waiting is observed, never slept for: the test reads koala's stderr notice
or stdout with a bounded ``read_exactly`` before it signals.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HISTORY_READERS, KOALA, PRIOR, WAIT, read_exactly
from standin import Script, StandIn, sse

PIPE = subprocess.PIPE
WAITING = b"koala: waiting for "  # the start of the notice koala prints once after a second of waiting


@contextlib.contextmanager
def running(*args: str, stdin: int | None = subprocess.DEVNULL) -> Iterator[subprocess.Popen[bytes]]:
    """The real `koala ARGS`, killed (and reaped) if the test leaves it running."""
    proc = subprocess.Popen([*KOALA, *args], stdin=stdin, stdout=PIPE, stderr=PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)


def finish(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Wait for the end (bounded); a run still going after WAIT seconds is a hang."""
    try:
        return proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=WAIT)
        pytest.fail(f"koala {proc.args[len(KOALA) :]} hung: killed after {WAIT:g} s")


# --- -H naming something that is not a regular file ----------------------------------------


@pytest.fixture(params=["fifo", "terminal"])
def special(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A path that names no regular file and would block whoever reads it: a FIFO without a
    writer, a pseudo-terminal.  (A Unix socket and /dev/null cannot block, and run in
    process: tests/cli/test_history_special_files.py.)"""
    if request.param == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
        yield path
    else:
        leader, follower = os.openpty()
        try:
            yield Path(os.ttyname(follower))
        finally:
            os.close(follower)
            os.close(leader)


@pytest.mark.parametrize("command", HISTORY_READERS.values(), ids=HISTORY_READERS.keys())
def test_history_that_is_no_regular_file_is_refused_at_once(server: StandIn, special: Path, command: list[str]) -> None:
    args = [str(special) if word == "{}" else word for word in command]
    if command[0] != "history":
        args += ["--base-url", server.base_url]
    started = time.monotonic()
    with running(*args) as proc:
        out, err = finish(proc)
    assert time.monotonic() - started < 10
    assert proc.returncode == 2, err
    assert out == b""
    assert err.startswith(b"koala: error: ") and err.count(b"\n") == 1, err
    assert b"not a regular file" in err
    assert server.requests == []


# --- a history lock held by another process --------------------------------------------------


@contextlib.contextmanager
def held(path: Path, operation: int) -> Iterator[None]:
    """Hold a lock on ``path`` as another process would (flock locks are per open file)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)


def wait_for_notice(proc: subprocess.Popen[bytes], path: Path) -> bytes:
    """koala's one stderr line saying what it waits for, read without blocking the test."""
    assert proc.stderr is not None
    line = read_exactly(proc.stderr.fileno(), len(WAITING))
    assert line == WAITING, f"no waiting notice, got {line!r}"
    rest = b""
    while not rest.endswith(b"\n"):
        piece = read_exactly(proc.stderr.fileno(), 1)
        assert piece, rest
        rest += piece
    assert str(path).encode() in rest and b"lock" in rest, rest
    return WAITING + rest


LOCKED_COMMANDS = {
    "ask": ["ask", "-H", "{}", "hi"],
    "ask-json": ["ask", "--json", "-H", "{}", "hi"],
    "dry-run": ["ask", "--dry-run", "-H", "{}", "hi"],
    "chat": ["chat", "-H", "{}"],
    "history-show": ["history", "show", "{}"],
}


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"])
@pytest.mark.parametrize("name", list(LOCKED_COMMANDS))
def test_waiting_for_a_read_lock_is_interruptible(
    server: StandIn, tmp_path: Path, name: str, signum: int, status: int
) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(PRIOR)
    args = [str(path) if word == "{}" else word for word in LOCKED_COMMANDS[name]]
    if args[0] != "history":
        args += ["--base-url", server.base_url]
    with held(path, fcntl.LOCK_EX), running(*args, stdin=PIPE if name == "chat" else subprocess.DEVNULL) as proc:
        notice = wait_for_notice(proc, path)
        proc.send_signal(signum)
        _, err = finish(proc)
    assert proc.returncode == status, err
    assert notice.count(b"\n") == 1
    assert err == f"koala: interrupted by {signal.Signals(signum).name}\n".encode(), err
    assert server.requests == []
    assert path.read_bytes() == PRIOR


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"])
def test_waiting_to_append_is_interruptible_and_saves_nothing(
    server: StandIn, tmp_path: Path, signum: int, status: int
) -> None:
    """A shared lock lets koala read and stream, then makes its append wait."""
    path = tmp_path / "chat.jsonl"
    path.write_bytes(PRIOR)
    with held(path, fcntl.LOCK_SH), running("ask", "-H", str(path), "--base-url", server.base_url, "hi") as proc:
        wait_for_notice(proc, path)
        proc.send_signal(signum)
        out, err = finish(proc)
    assert proc.returncode == status, err
    assert out == b"Hello, world\n"
    assert err == f"koala: interrupted by {signal.Signals(signum).name}\n".encode(), err
    assert path.read_bytes() == PRIOR


@pytest.mark.parametrize("where", ["read", "append"])
def test_waiting_for_a_lock_counts_against_max_time(server: StandIn, tmp_path: Path, where: str) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(PRIOR)
    lock = fcntl.LOCK_EX if where == "read" else fcntl.LOCK_SH
    started = time.monotonic()
    with (
        held(path, lock),
        running("ask", "-H", str(path), "--max-time", "1.5", "--base-url", server.base_url, "hi") as proc,
    ):
        _, err = finish(proc)
    assert time.monotonic() - started < 10
    assert proc.returncode == 3, err
    assert err.count(WAITING) == 1, err
    assert err.splitlines()[-1].startswith(b"koala: error: ") and b"--max-time" in err, err
    assert path.read_bytes() == PRIOR


def test_a_lock_released_soon_is_waited_for(server: StandIn, tmp_path: Path) -> None:
    """The lock is freed once koala says it waits; the turn is then saved as usual."""
    path = tmp_path / "chat.jsonl"
    path.write_bytes(PRIOR)
    with running("ask", "-H", str(path), "--base-url", server.base_url, "hi") as proc:
        with held(path, fcntl.LOCK_EX):
            wait_for_notice(proc, path)
        out, err = finish(proc)
    assert proc.returncode == 0, err
    assert out == b"Hello, world\n"
    assert path.read_bytes().startswith(PRIOR) and path.read_bytes().count(b"\n") == 4


# --- two signals in quick succession ---------------------------------------------------------

REPEATS = 12


@pytest.mark.parametrize("second", ["at-once", "after-newline", "after-line", "after-close"])
@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_two_signals_give_one_status_and_one_line(server: StandIn, first: int, second: str) -> None:
    """The second SIGINT lands while koala is still ending after the first: at once, as it
    ends the cut-off line, after its stderr line, or as stdout closes at exit.  Each point is
    tried several times; every run must give the first signal's status and one line."""
    failures = []
    for _ in range(REPEATS):
        gate = threading.Event()
        server.push(Script([sse("partial"), gate, sse(" rest")]))
        try:
            with running("ask", "--retries", "0", "--base-url", server.base_url, "hi") as proc:
                assert proc.stdout is not None and proc.stderr is not None
                assert read_exactly(proc.stdout.fileno(), 7) == b"partial"
                proc.send_signal(first)
                if second == "after-newline":
                    read_exactly(proc.stdout.fileno(), 1)
                elif second == "after-line":
                    read_exactly(proc.stderr.fileno(), 1)
                elif second == "after-close":
                    read_exactly(proc.stdout.fileno(), 2)  # the newline, then end of file
                proc.send_signal(signal.SIGINT)
                _, err = finish(proc)
        finally:
            gate.set()
        if second == "after-line":
            err = b"k" + err  # the first byte was read above
        # Sent at once, both may be pending together, and the kernel delivers the lower number
        # (SIGINT) first: then that one is the first koala sees.
        firsts = {first, signal.SIGINT} if second == "at-once" else {first}
        outcomes = {(128 + s, f"koala: interrupted by {signal.Signals(s).name}\n".encode()) for s in firsts}
        if (proc.returncode, err) not in outcomes:
            failures.append((proc.returncode, err.decode(errors="replace")[-300:]))
    assert not failures, f"{len(failures)} of {REPEATS}: {failures[:3]}"
