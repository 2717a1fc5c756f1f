"""koala at scale (issue 10), end to end through the real `koala`, where the process is the
point: batch as a streaming pipeline on pipes (a slow producer, a window that stops reading),
the shared backoff and --rate measured against the clock, the progress line on a terminal and
Ctrl-C while stdout is stalled.  Pooling, shards, resume, usage errors and strict JSON ids run
in process: tests/cli/test_batch_runs.py.

The server is ``keepalive.KeepAlive``: it keeps connections open and counts them.  Waits are
bounded; gates (threading.Event / Barrier) decide when the server answers.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path
from typing import IO, Any

from conftest import KOALA, WAIT, jobs, run_koala, stderr_on_a_terminal, stop, strict, strict_ndjson
from keepalive import Answer, KeepAlive, Request, echo, events


def batch(server: KeepAlive, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return run_koala("batch", "--base-url", server.base_url, "--retries", "0", *args, stdin=stdin)


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
            line = read_line(proc, pending)
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
        records = strict_ndjson(out)
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
    assert [r["text"] for r in strict_ndjson(result.stdout)] == [f"re: {p}" for p in "abcdef"]
    notices = [line for line in result.stderr.decode().splitlines() if "429" in line]
    assert len(notices) == 1, result.stderr  # one notice for the whole client, not one per job
    paused_until = max(refused_at) + 0.9
    later = [r for r in keepalive.requests if r.arrived > max(refused_at)]
    assert {r.prompt for r in later} == {"a", "b", "c", "e", "f"}
    assert all(r.arrived >= paused_until for r in later), "a job started during the pause"


def arrivals_and_gaps(requests: list[Any]) -> tuple[list[float], list[float]]:
    """When each request reached the server (in order), and the gaps between them.

    A gap at the server is the spacing of the starts plus how much longer the later request
    took to get there than the earlier one.  On a busy machine (the suite's parallel workers,
    or others') that varied by up to 0.06 s between later requests, and the run's first
    request -- a new connection, the client's first use -- arrived up to 0.2 s late.  So each
    gap is checked loosely (a burst, two starts at once, still leaves about 0), and the rate
    over the span from the second arrival, where only its two ends' delays count."""
    arrivals = sorted(r.arrived for r in requests)
    return arrivals, [b - a for a, b in itertools.pairwise(arrivals)]


def test_rate_spaces_the_starts(keepalive: KeepAlive) -> None:
    """4/s: starts 0.25 s apart."""
    result = batch(keepalive, "--lines", "--concurrency", "8", "--rate", "4/s", stdin=b"a\nb\nc\nd\ne\n")
    assert result.returncode == 0, result.stderr
    arrivals, gaps = arrivals_and_gaps(keepalive.requests)
    assert len(gaps) == 4
    assert min(gaps) >= 0.1, gaps  # no two starts together
    assert arrivals[4] - arrivals[1] >= 0.65, gaps  # three spacings of 0.25 s, less 0.1 s


def test_rate_per_minute(keepalive: KeepAlive) -> None:
    """120/m: starts 0.5 s apart (not 120 a second, 0.008 s apart)."""
    result = batch(keepalive, "--lines", "--concurrency", "8", "--rate", "120/m", stdin=b"a\nb\nc\nd\n")
    assert result.returncode == 0, result.stderr
    arrivals, gaps = arrivals_and_gaps(keepalive.requests)
    assert len(gaps) == 3
    assert min(gaps) >= 0.25, gaps
    assert arrivals[3] - arrivals[1] >= 0.9, gaps  # two spacings of 0.5 s, less 0.1 s


# --- the progress line ---------------------------------------------------------------------


def test_progress_line_for_a_file_shows_the_total_and_an_eta(keepalive: KeepAlive, tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("a\nb\n\nc\n")
    status, out, seen = stderr_on_a_terminal(["batch", "--lines", "--base-url", keepalive.base_url, str(path)])
    assert status == 0
    assert len(strict_ndjson(out)) == 3
    last = seen.replace(b"\r\n", b"\n").split(b"\r")[-1].decode()  # a terminal ends lines with CR LF
    assert "3 done, 0 failed, 0 in flight" in last, seen  # the last line has nothing left in flight
    assert "3/3" in last and "ETA" in last, seen


def test_progress_line_for_a_pipe_ends_with_zero_in_flight(keepalive: KeepAlive) -> None:
    status, out, seen = stderr_on_a_terminal(["batch", "--lines", "--base-url", keepalive.base_url], stdin=b"a\nb\n")
    assert status == 0
    assert len(strict_ndjson(out)) == 2
    last = seen.replace(b"\r\n", b"\n").split(b"\r")[-1].decode()  # a terminal ends lines with CR LF
    assert "2 done, 0 failed, 0 in flight" in last, seen
    assert "ETA" not in last  # no total to count from a pipe


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
