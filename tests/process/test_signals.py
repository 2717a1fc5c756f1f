"""Signals sent to the real `koala` process: SIGINT gives 130 and SIGTERM 143 with what arrived
kept, the last `--json` line an error record and the history untouched; an ignored SIGINT
stays ignored.  Each test knows the process is where it wants it (a chunk read from its pipe,
the request at the server) before it signals it."""

from __future__ import annotations

import email.utils
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    HISTORY_BYTES,
    KOALA,
    WAIT,
    history_file,
    jobs,
    popen_koala,
    read_exactly,
    read_line,
    read_lines,
    retry_delay,
    running,
    stop,
)
from standin import Notify, RoutedStandIn, Script, StandIn, sse


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_reply(server: StandIn, tmp_path: Path, signum: int, status: int) -> None:
    path = history_file(tmp_path)
    gate = threading.Event()
    server.push(Script([sse("partial"), gate, sse(" rest")]))
    try:
        with running("ask", "--base-url", server.base_url, "--retries", "0", "--json", "-H", str(path), "hi") as proc:
            read_lines(proc, 2)  # start, and the chunk that came before the server paused
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
    assert proc.returncode == status
    last = json.loads(out.splitlines()[-1])
    assert last["type"] == "error"
    assert last["exit_status"] == status
    assert b"Traceback" not in err
    assert err.decode().count("\n") == 1
    assert path.read_bytes() == HISTORY_BYTES


@pytest.mark.parametrize("value", ["3600", "date"])
def test_retry_after_is_capped_at_30_s_and_interruptible(server: StandIn, value: str) -> None:
    if value == "date":
        value = email.utils.formatdate(time.time() + 3600, usegmt=True)
    server.push(Script([b""], status=503, reason="Service Unavailable", headers={"Retry-After": value}))
    with running("ask", "--base-url", server.base_url, "--retries", "1", "--json", "hi") as proc:
        assert proc.stderr is not None
        notice = read_line(proc.stderr.fileno()).decode()
        assert retry_delay(notice) == 30.0, notice
        proc.send_signal(signal.SIGINT)  # while it waits: no 30 s test
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 130
    assert json.loads(out.splitlines()[-1])["exit_status"] == 130
    assert b"Traceback" not in err
    assert len(server.requests) == 1


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_reply_keeps_what_arrived(server: StandIn, tmp_path: Path, signum: int, status: int) -> None:
    path = history_file(tmp_path)
    gate = threading.Event()
    server.push(Script([sse("partial"), gate, sse(" rest")]))
    try:
        with running("ask", "--base-url", server.base_url, "--retries", "0", "-H", str(path), "hi") as proc:
            assert proc.stdout is not None
            assert read_exactly(proc.stdout.fileno(), 7) == b"partial"
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
    assert proc.returncode == status
    assert out == b"\n"  # the cut-off line is ended, nothing more
    assert err.count(b"\n") == 1
    assert b"Traceback" not in err
    assert signal.Signals(signum).name.encode() in err
    assert path.read_bytes() == HISTORY_BYTES


def test_signal_before_the_answer(server: StandIn, tmp_path: Path) -> None:
    signum, status = signal.SIGINT, 130
    path = history_file(tmp_path)
    arrived, gate = threading.Event(), threading.Event()
    server.push(Script(before=[Notify(arrived), gate]))
    try:
        with running("ask", "--base-url", server.base_url, "--retries", "0", "--json", "-H", str(path), "hi") as proc:
            assert arrived.wait(WAIT)
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
    assert proc.returncode == status
    records = [json.loads(line) for line in out.splitlines()]
    assert records[-1]["type"] == "error"
    assert records[-1]["exit_status"] == status
    assert [r["type"] for r in records[:-1]] in ([], ["start"])
    assert b"Traceback" not in err
    assert err.count(b"\n") == 1
    assert path.read_bytes() == HISTORY_BYTES


def test_ignored_sigint_stays_ignored(server: StandIn) -> None:
    # A background job of a script starts with SIGINT ignored; koala must not take it back.
    gate = threading.Event()
    server.push(Script([sse("early"), gate, sse(" late")]))
    ignore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    try:
        with running("ask", "--base-url", server.base_url, "hi", preexec_fn=ignore_sigint) as proc:
            assert proc.stdout is not None
            assert read_exactly(proc.stdout.fileno(), 5) == b"early"
            proc.send_signal(signal.SIGINT)
            gate.set()
            out, _ = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
    assert proc.returncode == 0
    assert out == b" late\n"


def test_piped_chat_sigint_while_waiting_for_input(server: StandIn) -> None:
    proc = subprocess.Popen(
        [*KOALA, "chat", "--base-url", server.base_url],
        stdin=subprocess.PIPE,  # kept open: koala waits for the next line
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"hi\n")
        proc.stdin.flush()
        assert read_exactly(proc.stdout.fileno(), len(b"Hello, world\n")) == b"Hello, world\n"
        proc.send_signal(signal.SIGINT)  # now blocked reading the next line
        _, err = proc.communicate(timeout=WAIT)
    finally:
        stop(proc)
    assert proc.returncode == 130
    assert b"Traceback" not in err


def test_piped_sigint_mid_reply_stops_the_chat(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    gate = threading.Event()
    server.push(Script([sse("partial"), gate, sse(" rest")]))
    try:
        with running(
            "chat", "--base-url", server.base_url, "--retries", "0", "-H", str(path), stdin=b"first\nsecond\n"
        ) as proc:
            assert proc.stdout is not None
            assert read_exactly(proc.stdout.fileno(), 7) == b"partial"
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
    assert proc.returncode == 130, err
    assert [r.json()["input"] for r in server.requests] == ["first"]  # "second" is never sent
    assert not path.exists()


@pytest.mark.parametrize("unordered", [False, True])
def test_batch_sigint_leaves_valid_ndjson(routed: RoutedStandIn, unordered: bool) -> None:
    gate = threading.Event()
    routed.route("held", Script([sse("never"), gate, sse("finished")]))
    stdin = jobs(
        *({"id": n, "prompt": f"quick {n}"} for n in range(3)),
        {"id": 3, "prompt": "held"},
        {"id": 4, "prompt": "after"},
    )
    flags = ["--unordered"] if unordered else []
    proc = popen_koala("batch", "--base-url", routed.base_url, "--retries", "0", *flags, stdin=stdin)
    try:
        lines = read_lines(proc, 3)
        assert routed.wait_requests(4)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
        stop(proc)
    assert proc.returncode == 130, err
    records = [json.loads(line) for line in [*lines, *out.splitlines()]]  # every line parses
    assert out == b"" or out.endswith(b"\n")
    assert all(r["id"] != 3 or r["ok"] is False for r in records)
    assert {0, 1, 2} <= {r["id"] for r in records if r["ok"]}
    assert b"Traceback" not in err
    assert "interrupted" in err.decode()
