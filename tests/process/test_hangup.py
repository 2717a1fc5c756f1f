"""SIGHUP -- the terminal closed, the ssh connection dropped -- stops koala as SIGTERM does:
what arrived is kept, nothing half-done is left behind, one line, status 129."""

import json
import os
import signal
import threading
from pathlib import Path

from conftest import HISTORY_BYTES, WAIT, history_file, jobs, read_lines, running
from standin import Script, StandIn, sse


def test_hangup_mid_reply_saves_nothing(server: StandIn, tmp_path: Path) -> None:
    path = history_file(tmp_path)
    gate = threading.Event()
    server.push(Script([sse("partial"), gate, sse(" rest")]))
    try:
        with running("ask", "--base-url", server.base_url, "--retries", "0", "--json", "-H", str(path), "hi") as proc:
            read_lines(proc, 2)  # start, and the chunk that came before the server paused
            proc.send_signal(signal.SIGHUP)
            out, err = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
    assert proc.returncode == 129
    assert json.loads(out.splitlines()[-1]) == {"type": "error", "message": "interrupted by SIGHUP", "exit_status": 129}
    assert err == b"koala: interrupted by SIGHUP\n"
    assert path.read_bytes() == HISTORY_BYTES


def test_hangup_leaves_no_half_kept_last_conversation(server: StandIn, tmp_path: Path) -> None:
    state = tmp_path / "state"
    gate = threading.Event()
    server.push(Script([sse("partial"), gate, sse(" rest")]))
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    try:
        with running("ask", "--base-url", server.base_url, "--retries", "0", "--json", "hi", env=env) as proc:
            read_lines(proc, 2)
            assert [p.name for p in (state / "koala").iterdir() if p.name.endswith(".tmp")]  # being written
            proc.send_signal(signal.SIGHUP)
            proc.communicate(timeout=WAIT)
    finally:
        gate.set()
    assert proc.returncode == 129
    assert list((state / "koala").iterdir()) == []  # the exchange was not kept, nor its temporary file


def test_hangup_mid_batch_keeps_whole_results(server: StandIn) -> None:
    gate = threading.Event()
    server.push(Script([sse("one")]))
    server.push(Script([sse("tw"), gate, sse("o")]))
    try:
        with running(
            "batch",
            "--base-url",
            server.base_url,
            "--retries",
            "0",
            "--concurrency",
            "1",
            stdin=jobs({"id": 1, "prompt": "a"}, {"id": 2, "prompt": "b"}),
        ) as proc:
            first = read_lines(proc, 1)
            proc.send_signal(signal.SIGHUP)
            out, err = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
    assert proc.returncode == 129
    assert json.loads(first[0])["text"] == "one"
    assert out == b""  # nothing after the first whole result, not half a line
    assert err.endswith(b"koala: interrupted by SIGHUP\n")
