"""Pipes: every chunk reaches the reading end as it arrives, and a reader that goes away ends
koala quietly with 141 -- through the real `koala` process and real pipes."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import (
    HISTORY_BYTES,
    KOALA,
    WAIT,
    history_file,
    jobs,
    ndjson,
    popen_koala,
    read_exactly,
    read_lines,
    read_until,
    running,
    stop,
)
from standin import Notify, RoutedStandIn, Script, StandIn, sse


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_first_chunk_reaches_the_pipe_while_the_server_pauses(server: StandIn, json_flag: list[str]) -> None:
    gate = threading.Event()
    server.push(Script([sse("early"), gate, sse(" late")]))
    proc = popen_koala("ask", "--base-url", server.base_url, "--retries", "0", *json_flag, "hi")
    try:
        assert proc.stdout is not None
        expected = b"early" if not json_flag else b'{"type":"start","model":"gpt-4o-mini"}\n'
        first = read_exactly(proc.stdout.fileno(), len(expected))
        assert first == expected  # arrived although the server is still waiting on the gate
        if json_flag:
            chunk = b'{"type":"chunk","text":"early"}\n'
            assert read_exactly(proc.stdout.fileno(), len(chunk)) == chunk
    finally:
        gate.set()
        proc.communicate(timeout=WAIT)
        stop(proc)
    assert proc.returncode == 0


def test_closed_stdout_is_quiet(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    server.push(Script([sse("x" * 50) * 2000]))
    shell = f"{' '.join(KOALA)} ask --base-url {server.base_url} -H {path} hi | head -c 5"
    result = subprocess.run(
        ["bash", "-c", shell], capture_output=True, timeout=WAIT, check=False, stdin=subprocess.DEVNULL
    )
    assert result.stdout == b"xxxxx"
    assert result.stderr == b""
    assert not path.exists()


@pytest.mark.parametrize("json_flag", [False, True])
def test_closed_stdout_mid_reply_is_quiet(server: StandIn, tmp_path: Path, json_flag: bool) -> None:
    path = history_file(tmp_path)
    gate = threading.Event()
    server.push(Script([sse("first"), gate, sse(" second" * 500), sse(" third")]))
    args = ["--base-url", server.base_url, "--retries", "0", "-H", str(path)] + (["--json"] if json_flag else [])
    try:
        with running("ask", *args, "hi") as proc:
            assert proc.stdout is not None and proc.stderr is not None
            assert b"first" in read_until(proc.stdout.fileno(), b"first")  # it is mid-reply
            proc.stdout.close()  # like `| head -c 5`
            gate.set()
            proc.wait(WAIT)
            err = proc.stderr.read()
    finally:
        gate.set()
    assert err == b""  # no traceback, no "Exception ignored"
    assert proc.returncode == 141
    assert path.read_bytes() == HISTORY_BYTES


def test_closed_stdout_before_any_output(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    arrived, gate = threading.Event(), threading.Event()
    server.push(Script(before=[Notify(arrived), gate], parts=[sse("reply")]))
    try:
        with running("ask", "--base-url", server.base_url, "--retries", "0", "-H", str(path), "hi") as proc:
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            assert arrived.wait(WAIT)
            gate.set()
            proc.wait(WAIT)
            err = proc.stderr.read()
    finally:
        gate.set()
    assert err == b""
    assert proc.returncode == 141
    assert not path.exists()


def test_batch_closed_stdout_is_quiet(server: StandIn) -> None:
    server.default = Script([sse("x" * 1000) * 200])  # a 200 kB result line: more than a pipe holds
    proc = popen_koala("batch", "--base-url", server.base_url, "--retries", "0", "--lines", stdin=b"one\ntwo\n")
    try:
        assert proc.stdout is not None
        assert os.read(proc.stdout.fileno(), 10) == b'{"id": 1, '
        proc.stdout.close()  # the reader goes away while koala is still writing
        proc.stdout = None
        _, err = proc.communicate(timeout=WAIT)
    finally:
        stop(proc)
    assert b"Traceback" not in err
    assert err == b""
    assert proc.returncode == 141


def test_batch_unordered_writes_a_result_as_soon_as_it_is_done(routed: RoutedStandIn) -> None:
    gate = threading.Event()
    routed.route("slow", Script([gate, sse("late")]))
    proc = popen_koala(
        "batch",
        "--base-url",
        routed.base_url,
        "--retries",
        "0",
        "--unordered",
        stdin=jobs({"id": "A", "prompt": "slow"}, {"id": "B", "prompt": "fast"}),
    )
    try:
        first = read_lines(proc, 1)  # while A is still held back by the server
        assert json.loads(first[0])["id"] == "B"
        routed.release(gate)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
        stop(proc)
    assert proc.returncode == 0, err
    assert [r["id"] for r in ndjson(out)] == ["A"]
