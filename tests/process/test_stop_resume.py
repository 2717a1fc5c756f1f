"""Time spent stopped (Ctrl-Z, SIGSTOP) is not idle time: a `koala` stopped for longer than
--timeout and then resumed reads what waited in its socket, and gives a server that sent
nothing while it was stopped a whole --timeout more.  The stop has to outlast --timeout, so
these tests wait that long on purpose: the duration is what is tested, not a synchronisation."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import KOALA, read_exactly
from standin import Notify, Script, StandIn, sse

TIMEOUT = "1"
STOPPED_FOR = 3.0  # well past --timeout


def state(pid: int) -> str:
    """The process state letter from /proc: T when stopped."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0]


def wait_for_state(pid: int, stopped: bool) -> None:
    deadline = time.monotonic() + 10
    while (state(pid) == "T") != stopped:
        assert time.monotonic() < deadline, f"process {pid} never {'stopped' if stopped else 'resumed'}"
        time.sleep(0.01)


@pytest.fixture
def launch(server: StandIn) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def start(server: StandIn, started: list[subprocess.Popen[bytes]], retries: str = "0") -> subprocess.Popen[bytes]:
    command = [*KOALA, "ask", "--base-url", server.base_url, "--timeout", TIMEOUT, "--retries", retries, "hi"]
    # Its own process group: one whose parent is in another group of the session is not orphaned,
    # so the kernel delivers SIGTSTP (it discards it for an orphaned group, as under a CI runner).
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0
    )
    started.append(process)
    return process


def stop(process: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTSTP) -> None:
    os.kill(process.pid, how)
    wait_for_state(process.pid, stopped=True)


def resume(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGCONT)
    wait_for_state(process.pid, stopped=False)


def test_stopped_mid_reply_reads_what_waited_in_the_socket(
    server: StandIn, launch: list[subprocess.Popen[bytes]]
) -> None:
    gate, sent = threading.Event(), threading.Event()
    server.push(Script([sse("first"), gate, sse(" second", done=True), Notify(sent)]))
    process = start(server, launch)
    assert process.stdout is not None
    assert read_exactly(process.stdout.fileno(), len(b"first")) == b"first"
    stop(process)  # Ctrl-Z
    gate.set()
    assert sent.wait(10)
    time.sleep(STOPPED_FOR)
    resume(process)  # fg
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out == b" second\n"
    assert err == b""


def test_stopped_before_the_answer_reads_it_without_a_retry(
    server: StandIn, launch: list[subprocess.Popen[bytes]]
) -> None:
    arrived, gate, sent = threading.Event(), threading.Event(), threading.Event()
    server.push(Script([sse("whole reply", done=True), Notify(sent)], before=[Notify(arrived), gate]))
    process = start(server, launch, retries="2")
    assert arrived.wait(20)
    stop(process, signal.SIGSTOP)
    gate.set()
    assert sent.wait(10)
    time.sleep(STOPPED_FOR)
    resume(process)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out == b"whole reply\n"
    assert err == b""  # no "retrying" notice
    assert len(server.requests) == 1


def test_stopped_while_the_server_was_quiet_gets_a_whole_timeout_after_resuming(
    server: StandIn, launch: list[subprocess.Popen[bytes]]
) -> None:
    gate = threading.Event()
    server.push(Script([sse("first"), gate, sse(" second", done=True)]))
    process = start(server, launch)
    assert process.stdout is not None
    assert read_exactly(process.stdout.fileno(), len(b"first")) == b"first"
    stop(process)
    time.sleep(STOPPED_FOR)
    resume(process)
    gate.set()  # well within --timeout of the resumption
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out == b" second\n"


def test_a_real_stall_still_times_out(server: StandIn, launch: list[subprocess.Popen[bytes]]) -> None:
    gate = threading.Event()
    server.push(Script([sse("first"), gate]))
    process = start(server, launch)
    started = time.monotonic()
    try:
        _, err = process.communicate(timeout=30)
    finally:
        gate.set()
    assert process.returncode == 3, err
    assert b"no data" in err
    assert time.monotonic() - started < 15
