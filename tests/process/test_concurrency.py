"""Concurrency: many `koala ask` runs on one history file at once, some killed or interrupted
mid-reply; and `koala batch`'s requests in flight, their bound and the order of the results.

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
from conftest import WAIT, jobs, ndjson, popen_koala, read_exactly, read_lines, stop
from standin import Recorded, RoutedStandIn, Script, StandIn, sse

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
def serving() -> Iterator[Callable[[Callable[[Recorded], Script]], StandIn]]:
    """Start stand-ins that answer each request as ``route`` decides."""
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
    return popen_koala("ask", "--base-url", server.base_url, "--retries", "0", "-H", str(path), f"question {n}")


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
    serving: Callable[[Callable[[Recorded], Script]], StandIn], tmp_path: Path
) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(PRIOR)
    release, hold = threading.Event(), threading.Event()

    def route(request: Recorded) -> Script:
        n = number(request)
        gate = hold if n in KILLED or n in INTERRUPTED else release
        return Script([sse(f"reply {n} "), gate, sse("end")])

    server = serving(route)
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
    serving: Callable[[Callable[[Recorded], Script]], StandIn], tmp_path: Path
) -> None:
    """Runs that start while others append: each sends whole turns, in the file's order."""
    path = tmp_path / "chat.jsonl"
    path.write_bytes(PRIOR)
    server = serving(lambda request: Script([sse(f"reply {number(request)} ", "end")]))
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


def test_concurrent_runs_on_one_history(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    for n in range(8):
        server.push(Script([sse(f"reply {n} ", "end")]))
    procs = [launch(server, path, n) for n in range(8)]
    try:
        for proc in procs:
            proc.communicate(timeout=WAIT)
            assert proc.returncode == 0
    finally:
        for proc in procs:
            stop(proc)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 16
    users = lines[0::2]
    assistants = lines[1::2]
    assert all(m["role"] == "user" for m in users)
    assert all(m["role"] == "assistant" for m in assistants)
    assert sorted(m["content"] for m in users) == [f"question {n}" for n in range(8)]


def test_batch_ordered_holds_a_finished_result_for_an_earlier_job(routed: RoutedStandIn) -> None:
    gate = threading.Event()
    routed.route("slow", Script([gate, sse("late")]))
    proc = popen_koala(
        "batch",
        "--base-url",
        routed.base_url,
        "--retries",
        "0",
        "--concurrency",
        "2",
        stdin=jobs({"id": "A", "prompt": "slow"}, {"id": "B", "prompt": "fast"}, {"id": "C", "prompt": "more"}),
    )
    try:
        # C starts only when B's slot is free, i.e. after B's result is known; A is still held.
        assert routed.wait_requests(3)
        routed.release(gate)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
        stop(proc)
    assert proc.returncode == 0, err
    assert err == b""
    records = ndjson(out)
    assert [r["id"] for r in records] == ["A", "B", "C"]
    assert records[0]["text"] == "late"


@pytest.mark.parametrize(("flags", "limit"), [(["--concurrency", "2"], 2), ([], 4)])
def test_batch_concurrency_bounds_requests_in_flight(routed: RoutedStandIn, flags: list[str], limit: int) -> None:
    gates = {f"j{n}": threading.Event() for n in range(limit + 3)}
    for name, gate in gates.items():
        routed.route(name, Script([gate, sse(f"reply {name}")]))
    proc = popen_koala(
        "batch",
        "--base-url",
        routed.base_url,
        "--retries",
        "0",
        *flags,
        stdin=jobs(*({"id": name, "prompt": name} for name in gates)),
    )
    try:
        assert routed.wait_requests(limit)
        # An observation window, not synchronisation: no more requests may come while `limit` are held.
        assert not routed.wait_requests(limit + 1, timeout=1.0)
        released = 0
        while released < len(gates):  # free the oldest; the next job may start
            oldest = routed.requests[released].json()["input"]
            routed.release(gates[oldest])
            released += 1
            assert routed.wait_requests(min(released + limit, len(gates)))
        out, err = proc.communicate(timeout=WAIT)
    finally:
        for gate in gates.values():
            gate.set()
        stop(proc)
    assert proc.returncode == 0, err
    assert [r["id"] for r in ndjson(out)] == list(gates)
    assert max(routed.unreleased_at_arrival) == limit, routed.unreleased_at_arrival


def test_batch_exit_status_is_the_first_failure_in_input_order(routed: RoutedStandIn) -> None:
    gate = threading.Event()
    routed.route("broken", Script([gate, sse("ok"), b"data: {broken\n\n"]))
    routed.route("refused", Script([b"busy"], status=500, reason="Internal Server Error"))
    proc = popen_koala(
        "batch",
        "--base-url",
        routed.base_url,
        "--retries",
        "0",
        "--unordered",
        stdin=jobs({"id": 1, "prompt": "fine"}, {"id": 2, "prompt": "broken"}, {"id": 3, "prompt": "refused"}),
    )
    try:
        lines = read_lines(proc, 2)  # 1 and 3 finish first; 2 (exit 5) fails last
        assert sorted(json.loads(line)["id"] for line in lines) == [1, 3]
        routed.release(gate)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
        stop(proc)
    assert proc.returncode == 5, err
    records = {r["id"]: r for r in ndjson(b"\n".join(lines) + b"\n" + out)}
    assert records[1]["ok"] is True
    assert records[2]["error"]["exit_status"] == 5
    assert "malformed" in records[2]["error"]["message"]
    assert records[3] == {"id": 3, "ok": False, "error": records[3]["error"]}
    assert records[3]["error"]["exit_status"] == 4
    assert "500" in records[3]["error"]["message"]
