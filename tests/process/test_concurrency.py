"""Many `koala ask` runs on one history file at once, some killed or interrupted mid-reply.

Every run gets its own scripted reply (routed by its prompt) held at a gate after the first
chunk, so the test knows each run is really mid-reply -- it has read that chunk from the
run's pipe -- before it signals it.  Afterwards the file must hold exactly the completed
turns, each user line followed by its own assistant line, every line valid JSON.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import KOALA, read_exactly
from standin import Recorded, Script, StandIn, sse

WAIT = 60.0  # generous: 32 interpreters start on 2 cores
PRIOR = b'{"role":"user","content":"earlier"}\n{"role":"assistant","content":"before"}'  # no final newline

COMPLETE = range(0, 16)  # released together: their appends race each other
KILLED = range(16, 22)  # SIGKILL mid-reply
INTERRUPTED = range(22, 28)  # SIGINT mid-reply
RACING = range(28, 32)  # released, then SIGKILLed at once: killed before, during or after their append
RUNS = 32


def number(request: Recorded) -> int:
    prompt: str = request.json()["input"]
    assert prompt.startswith("question ")
    return int(prompt.removeprefix("question "))


@pytest.fixture
def routed() -> Iterator[Callable[[Callable[[Recorded], Script]], StandIn]]:
    servers: list[StandIn] = []

    def make(route: Callable[[Recorded], Script]) -> StandIn:
        server = StandIn(route, gate_timeout=2 * WAIT).start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


def launch(server: StandIn, path: Path, n: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*KOALA, "ask", "--base-url", server.base_url, "--retries", "0", "-H", str(path), f"question {n}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def turns(path: Path) -> list[tuple[int, int]]:
    """The (user, assistant) question numbers of every turn after the prior ones, checking the shape."""
    data = path.read_bytes()
    assert data.startswith(PRIOR + b"\n"), data[:200]  # earlier bytes kept, the last line ended, not glued
    lines = data.decode("utf-8").split("\n")
    assert lines[-1] == "", "the file ends with a newline"
    records = [json.loads(line) for line in lines[:-1]]  # every line is valid JSON
    assert all(set(r) == {"role", "content"} for r in records)
    new = records[2:]
    assert len(new) % 2 == 0, new
    pairs: list[tuple[int, int]] = []
    for user, assistant in zip(new[0::2], new[1::2], strict=True):
        assert user["role"] == "user" and assistant["role"] == "assistant", (user, assistant)
        asked = int(user["content"].removeprefix("question "))
        answered = int(assistant["content"].removeprefix("reply ").removesuffix(" end"))
        pairs.append((asked, answered))
    return pairs


def test_killed_and_interrupted_runs_leave_only_complete_turns(
    routed: Callable[[Callable[[Recorded], Script]], StandIn], tmp_path: Path
) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(PRIOR)
    release, hold = threading.Event(), threading.Event()

    def route(request: Recorded) -> Script:
        n = number(request)
        gate = hold if n in KILLED or n in INTERRUPTED else release
        return Script([sse(f"reply {n} "), gate, sse("end")])

    server = routed(route)
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[int, tuple[int, bytes, bytes]] = {}
    try:
        procs = [launch(server, path, n) for n in range(RUNS)]
        deadline = time.monotonic() + WAIT
        for n, proc in enumerate(procs):  # every run is mid-reply: its first chunk is in our pipe
            assert proc.stdout is not None
            first = f"reply {n} ".encode()
            assert read_exactly(proc.stdout.fileno(), len(first), deadline - time.monotonic()) == first, n
        for n in KILLED:
            procs[n].kill()
        for n in INTERRUPTED:
            procs[n].send_signal(signal.SIGINT)
        release.set()
        for n in RACING:
            procs[n].kill()
        for n, proc in enumerate(procs):
            out, err = proc.communicate(timeout=WAIT)
            results[n] = (proc.returncode, out, err)
    finally:
        release.set()
        hold.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=WAIT)

    for n in COMPLETE:
        assert results[n] == (0, b"end\n", b""), n  # the rest of "reply {n} end\n"
    for n in KILLED:
        assert results[n][0] == -signal.SIGKILL, n
    for n in INTERRUPTED:
        status, out, err = results[n]
        assert (status, out) == (130, b"\n"), (n, results[n])  # the cut-off line ended, nothing more
        assert err == b"koala: interrupted by SIGINT\n", err
    for n in RACING:
        assert results[n][0] in (0, -signal.SIGKILL), (n, results[n])

    pairs = turns(path)
    assert all(asked == answered for asked, answered in pairs), pairs  # each user line has its own reply
    saved = [asked for asked, _ in pairs]
    assert len(saved) == len(set(saved)), saved  # no turn twice
    finished = set(COMPLETE) | {n for n in RACING if results[n][0] == 0}
    assert finished <= set(saved) <= finished | set(RACING), saved  # exactly the completed runs


def test_readers_never_see_half_a_turn(
    routed: Callable[[Callable[[Recorded], Script]], StandIn], tmp_path: Path
) -> None:
    """Runs that start while others append: each sends whole turns, in the file's order."""
    path = tmp_path / "chat.jsonl"
    path.write_bytes(PRIOR)
    server = routed(lambda request: Script([sse(f"reply {number(request)} ", "end")]))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(8):
            procs.append(launch(server, path, n))
        outcomes = [proc.communicate(timeout=WAIT) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=WAIT)
    assert [proc.returncode for proc in procs] == [0] * 8, outcomes
    pairs = turns(path)
    assert sorted(asked for asked, _ in pairs) == list(range(8))
    assert all(asked == answered for asked, answered in pairs)
    order = [f"question {asked}" for asked, _ in pairs]
    for request in server.requests:
        sent = request.json()
        users, assistants = sent["inputHistory"], sent["outputHistory"]
        assert users[0] == "earlier" and assistants[0] == "before"
        assert len(users) == len(assistants)  # a turn is read whole or not at all
        assert users[1:] == order[: len(users) - 1]  # a prefix of the final order: appends only
        assert assistants[1:] == [u.replace("question", "reply") + " end" for u in users[1:]]
