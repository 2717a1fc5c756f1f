"""koala at scale (issue 10), end to end through the real `koala`: one connection pool per run,
batch as a streaming pipeline, shards, resume, shared backoff, --rate, the progress line, and
batch's output always strict JSON (issue 8).

The server is ``keepalive.KeepAlive``: it keeps connections open and counts them.  Waits are
bounded; gates (threading.Event / Barrier) decide when the server answers.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import KOALA, run_koala
from keepalive import Answer, KeepAlive, Request, echo, events

pytestmark = pytest.mark.subprocess

WAIT = 20.0


@pytest.fixture
def keepalive() -> Iterator[KeepAlive]:
    server = KeepAlive().start()
    try:
        yield server
    finally:
        server.stop()


def jobs(*records: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def strict(line: bytes) -> Any:
    """Parse as RFC 8259 JSON, which has no NaN or Infinity (what jq accepts)."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def ndjson(data: bytes) -> list[dict[str, Any]]:
    assert data == b"" or data.endswith(b"\n"), data[-200:]
    return [strict(line) for line in data.split(b"\n") if line]


def batch(server: KeepAlive, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return run_koala("batch", "--base-url", server.base_url, "--retries", "0", *args, stdin=stdin)


def key(record: dict[str, Any]) -> str:
    """How a result is known: its id, or (a job without one) its line."""
    return json.dumps(record["id"]) if "id" in record else f"line {record['line']}"


def read_line(proc: subprocess.Popen[bytes], buffer: bytearray, timeout: float = WAIT) -> bytes | None:
    """The next whole line of the process's stdout, or None after ``timeout`` or at its end."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        piece = os.read(fd, 65536)
        if not piece:
            return None
        buffer += piece
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(WAIT)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("koala: error: "), err
    return err


# --- one client, pooled connections --------------------------------------------------------


def test_batch_requests_share_a_pool_of_at_most_concurrency_connections(keepalive: KeepAlive) -> None:
    prompts = [f"prompt {n}" for n in range(24)]
    result = batch(keepalive, "--lines", "--concurrency", "4", stdin="\n".join(prompts).encode() + b"\n")
    assert result.returncode == 0, result.stderr
    records = ndjson(result.stdout)
    assert [r["text"] for r in records] == [f"re: {p}" for p in prompts]
    assert len(keepalive.requests) == 24
    assert 1 <= keepalive.connections <= 4  # not one connection per job


def test_chat_turns_reuse_one_connection(keepalive: KeepAlive) -> None:
    result = run_koala("chat", "--base-url", keepalive.base_url, stdin=b"one\ntwo\nthree\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"re: one\nre: two\nre: three\n"
    assert len(keepalive.requests) == 3
    assert keepalive.connections == 1


# --- a streaming pipeline ------------------------------------------------------------------


def test_a_slow_producer_gets_each_result_before_its_input_ends(keepalive: KeepAlive) -> None:
    proc = subprocess.Popen(
        [*KOALA, "batch", "--base-url", keepalive.base_url, "--retries", "0", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        pending = bytearray()
        for number in range(3):  # the producer is still there, its stdin open, between jobs
            proc.stdin.write(jobs({"id": number, "prompt": f"job {number}"}))
            proc.stdin.flush()
            line = read_line(proc, pending, timeout=10)
            assert line is not None, f"no result for job {number} while the input is still open"
            assert strict(line) == {**strict(line), "id": number, "ok": True, "text": f"re: job {number}"}
        proc.stdin.close()
        assert proc.wait(WAIT) == 0
    finally:
        stop(proc)


def test_ordered_output_stops_reading_when_its_window_is_full(keepalive: KeepAlive) -> None:
    gate = threading.Event()

    def route(request: Request) -> Answer:
        if request.prompt == "first":
            gate.wait(WAIT)
        return echo(request)

    keepalive.route = route
    count = 1500
    padding = b"." * 200  # 300 kB in all: far more than a pipe holds and koala's window together
    stdin = b"first\n" + b"".join(b"next %d %s\n" % (n, padding) for n in range(count - 1))
    proc = subprocess.Popen(
        [*KOALA, "batch", "--lines", "--base-url", keepalive.base_url, "--concurrency", "4", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    feed, proc.stdin = proc.stdin, None  # written by the thread below, never by communicate()
    writer = threading.Thread(target=_feed, args=(feed, stdin), daemon=True)
    try:
        writer.start()
        # The first job is held: its result cannot be written, so later results wait in a
        # bounded window -- and once it is full, koala stops reading and starting jobs.
        writer.join(3)
        assert writer.is_alive(), "koala read all its input while the first job was held"
        assert len(keepalive.requests) < count // 2, "every job started while the first one was held"
        gate.set()
        out, err = proc.communicate(timeout=60)
        writer.join(WAIT)
        assert proc.returncode == 0, err
        records = ndjson(out)
        assert [r["id"] for r in records] == list(range(1, count + 1))
    finally:
        gate.set()
        stop(proc)


def _feed(pipe: IO[bytes] | None, data: bytes) -> None:
    assert pipe is not None
    with contextlib.suppress(BrokenPipeError, ValueError):
        pipe.write(data)
    with contextlib.suppress(OSError):
        pipe.close()


# --- shards and resume ---------------------------------------------------------------------


def _shard_input() -> bytes:
    records: list[dict[str, Any]] = []
    for n in range(45):
        if n % 3 == 0:
            records.append({"id": n, "prompt": f"p{n}"})
        elif n % 3 == 1:
            records.append({"id": f"s-{n}", "prompt": f"p{n}"})
        else:
            records.append({"prompt": f"p{n}"})  # no id: known by its line
    return jobs(*records)


def test_shards_partition_the_jobs_stably(keepalive: KeepAlive) -> None:
    stdin = _shard_input()
    everything = ndjson(batch(keepalive, stdin=stdin).stdout)
    assert len(everything) == 45
    shards = []
    for k in (1, 2, 3):
        result = batch(keepalive, "--shard", f"{k}/3", stdin=stdin)
        assert result.returncode == 0, result.stderr
        shards.append([key(r) for r in ndjson(result.stdout)])
    assert all(shards), "a shard got no job at all"
    merged = [k for shard in shards for k in shard]
    assert sorted(merged) == sorted(key(r) for r in everything)  # every job in exactly one shard
    again = batch(keepalive, "--shard", "2/3", stdin=stdin)
    assert [key(r) for r in ndjson(again.stdout)] == shards[1]  # stable


def test_shard_then_resume_runs_only_that_shards_missing_jobs(keepalive: KeepAlive, tmp_path: Path) -> None:
    failing = {f"p{n}" for n in range(0, 45, 2)}  # about half of every shard

    def route(request: Request) -> Answer:
        if request.prompt in failing:
            return Answer(b"no", status=500, reason="Internal Server Error", headers={"Content-Type": "text/plain"})
        return echo(request)

    keepalive.route = route
    stdin = _shard_input()
    out = tmp_path / "shard1.jsonl"
    first = batch(keepalive, "--shard", "1/2", stdin=stdin)
    out.write_bytes(first.stdout)
    records = ndjson(first.stdout)
    failed = {key(r) for r in records if not r["ok"]}
    assert failed and len(failed) < len(records)
    keepalive.route = echo
    keepalive.requests.clear()
    second = batch(keepalive, "--shard", "1/2", "--resume", str(out), stdin=stdin)
    assert second.returncode == 0, second.stderr
    rerun = ndjson(second.stdout)
    assert {key(r) for r in rerun} == failed
    assert len(keepalive.requests) == len(failed)
    ok = {key(r) for r in [*records, *rerun] if r["ok"]}
    assert ok == {key(r) for r in records}  # the shard is now complete, each job once


@pytest.mark.parametrize("value", ["0/3", "4/3", "1/0", "x", "1/2/3", "-1/2"])
def test_a_bad_shard_is_a_usage_error(keepalive: KeepAlive, value: str) -> None:
    result = batch(keepalive, "--lines", "--shard", value, stdin=b"a\n")
    assert result.returncode == 2
    assert "--shard" in one_line_error(result)
    assert keepalive.requests == []


# --- rate limits and the shared backoff ----------------------------------------------------


def test_a_retry_after_pauses_every_start_with_one_notice(keepalive: KeepAlive) -> None:
    limited = threading.Barrier(4, timeout=WAIT)  # a, b, c and d: all four in flight
    refused = threading.Event()
    refused_at: list[float] = []
    seen: set[str] = set()
    lock = threading.Lock()

    def route(request: Request) -> Answer:
        prompt = request.prompt
        with lock:
            first_time = prompt not in seen
            seen.add(prompt)
        if prompt in ("a", "b", "c", "d") and first_time:
            limited.wait()
            if prompt == "d":
                refused.wait(WAIT)  # d ends just after the 429s: its slot frees during the pause
                return echo(request)
            with lock:  # a, b and c answer 429 together
                refused_at.append(time.monotonic())
            refused.set()
            return Answer(b"slow down", status=429, reason="Too Many Requests", headers={"Retry-After": "1"})
        return echo(request)

    keepalive.route = route
    result = run_koala(
        "batch", "--lines", "--concurrency", "4", "--base-url", keepalive.base_url, stdin=b"a\nb\nc\nd\ne\nf\n"
    )
    assert result.returncode == 0, result.stderr
    assert [r["text"] for r in ndjson(result.stdout)] == [f"re: {p}" for p in "abcdef"]
    notices = [line for line in result.stderr.decode().splitlines() if "429" in line]
    assert len(notices) == 1, result.stderr  # one notice for the whole client, not one per job
    paused_until = max(refused_at) + 0.9
    later = [r for r in keepalive.requests if r.arrived > max(refused_at)]
    assert {r.prompt for r in later} == {"a", "b", "c", "e", "f"}
    assert all(r.arrived >= paused_until for r in later), "a job started during the pause"


def test_rate_spaces_the_starts(keepalive: KeepAlive) -> None:
    result = batch(keepalive, "--lines", "--concurrency", "8", "--rate", "10/s", stdin=b"a\nb\nc\nd\ne\n")
    assert result.returncode == 0, result.stderr
    arrivals = sorted(r.arrived for r in keepalive.requests)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(gaps) == 4
    assert min(gaps) >= 0.08, gaps  # 10/s: 0.1 s apart (less a little timer slack)


def test_rate_per_minute(keepalive: KeepAlive) -> None:
    result = batch(keepalive, "--lines", "--concurrency", "8", "--rate", "120/m", stdin=b"a\nb\nc\n")
    assert result.returncode == 0, result.stderr
    arrivals = sorted(r.arrived for r in keepalive.requests)
    assert arrivals[2] - arrivals[0] >= 0.9  # 120/m: 0.5 s apart


@pytest.mark.parametrize("value", ["0/s", "5", "x/s", "5/h", "-1/m", "inf/s", "nan/s"])
def test_a_bad_rate_is_a_usage_error(keepalive: KeepAlive, value: str) -> None:
    result = batch(keepalive, "--lines", "--rate", value, stdin=b"a\n")
    assert result.returncode == 2
    assert "--rate" in one_line_error(result)
    assert keepalive.requests == []


# --- the progress line ---------------------------------------------------------------------


def _progress(args: list[str], stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [*KOALA, *args],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        slave = -1
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
            proc.stdin = None
        seen = b""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if not select.select([master], [], [], deadline - time.monotonic())[0]:
                continue
            try:
                piece = os.read(master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not piece:
                break
            seen += piece
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return proc.returncode, out, seen


def test_progress_line_for_a_file_shows_the_total_and_an_eta(keepalive: KeepAlive, tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("a\nb\n\nc\n")
    status, out, seen = _progress(["batch", "--lines", "--base-url", keepalive.base_url, str(path)])
    assert status == 0
    assert len(ndjson(out)) == 3
    last = seen.replace(b"\r\n", b"\n").split(b"\r")[-1].decode()  # a terminal ends lines with CR LF
    assert "3 done, 0 failed, 0 in flight" in last, seen  # the last line has nothing left in flight
    assert "3/3" in last and "ETA" in last, seen


def test_progress_line_for_a_pipe_ends_with_zero_in_flight(keepalive: KeepAlive) -> None:
    status, out, seen = _progress(["batch", "--lines", "--base-url", keepalive.base_url], stdin=b"a\nb\n")
    assert status == 0
    assert len(ndjson(out)) == 2
    last = seen.replace(b"\r\n", b"\n").split(b"\r")[-1].decode()  # a terminal ends lines with CR LF
    assert "2 done, 0 failed, 0 in flight" in last, seen
    assert "ETA" not in last  # no total to count from a pipe


# --- ids: strict JSON out, no collisions (issue 8) -----------------------------------------


def test_non_finite_ids_are_bad_lines_and_every_output_line_is_strict_json(keepalive: KeepAlive) -> None:
    stdin = (
        b'{"id": 1e400, "prompt": "a"}\n{"id": NaN, "prompt": "b"}\n{"id": -Infinity, "prompt": "c"}\n'
        b'{"id": [1, Infinity], "prompt": "d"}\n{"id": 5, "prompt": "e"}\n'
    )
    result = batch(keepalive, stdin=stdin)
    assert result.returncode == 2
    records = ndjson(result.stdout)  # strict: fails on NaN or Infinity anywhere
    assert [r["ok"] for r in records] == [False, False, False, False, True]
    for record, line in zip(records[:4], (1, 2, 3, 4), strict=True):
        assert record["line"] == line
        assert record["error"]["exit_status"] == 2
        assert "id" in record["error"]["message"]
    assert keepalive.prompts() == ["e"]


def test_a_job_without_an_id_never_collides_with_an_explicit_one(keepalive: KeepAlive, tmp_path: Path) -> None:
    stdin = jobs({"id": 2, "prompt": "a"}, {"prompt": "b"}, {"id": 1, "prompt": "c"}, {"prompt": "d"})
    result = batch(keepalive, stdin=stdin)
    assert result.returncode == 0, result.stderr
    records = ndjson(result.stdout)
    assert [r["text"] for r in records] == ["re: a", "re: b", "re: c", "re: d"]
    assert [key(r) for r in records] == ["2", "line 2", "1", "line 4"]
    assert "id" not in records[1] and "id" not in records[3]
    out = tmp_path / "out.jsonl"
    out.write_bytes(result.stdout)
    keepalive.requests.clear()
    again = batch(keepalive, "--resume", str(out), stdin=stdin)
    assert (again.returncode, again.stdout) == (0, b"")
    assert keepalive.requests == []  # resume knows the id-less jobs by their line


def test_ctrl_c_works_while_stdout_is_stalled(keepalive: KeepAlive) -> None:
    keepalive.route = lambda request: Answer(events("x" * 100_000))  # 4 results: more than a pipe holds
    proc = subprocess.Popen(
        [*KOALA, "batch", "--lines", "--base-url", keepalive.base_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"a\nb\nc\nd\n")
        proc.stdin.close()
        proc.stdin = None
        deadline = time.monotonic() + WAIT
        queued = 0
        while time.monotonic() < deadline:  # until the pipe is full: nobody reads stdout
            queued = struct.unpack("i", fcntl.ioctl(proc.stdout.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
            if queued >= 65536:
                break
            time.sleep(0.05)
        assert queued >= 65536, queued
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130  # the first Ctrl-C is enough
        assert proc.stderr is not None
        assert b"Traceback" not in proc.stderr.read()
    finally:
        stop(proc)
