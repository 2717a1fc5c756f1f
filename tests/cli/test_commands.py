"""The new commands and options end to end: batch, ask --dry-run/--stats/--max-turns, models,
history show, completion and the OpenAI-compatible provider.

The real `koala` runs in a subprocess against the loopback stand-in; gates (threading.Event)
decide when the server may answer, so nothing here waits on a sleep to synchronise.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import KOALA, run_koala
from standin import Recorded, Script, StandIn, sse

WAIT = 20.0  # the longest any bounded wait here may take


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert err.count("\n") == 1, err
    assert err.startswith("koala: error: "), err
    assert "Traceback" not in err
    return err


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def ndjson(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().split("\n") if line]


def closed_base_url() -> str:
    """A loopback URL nobody listens on."""
    closed = StandIn()
    url = closed.base_url
    closed.stop()
    return url


class RoutedStandIn(StandIn):
    """A stand-in that picks each answer from the request's prompt, for concurrent clients.

    ``routes[word]`` is a queue of scripts (the last one is reused) for prompts whose first word
    is ``word``; other prompts get the default.  At every arrival it records how many requests
    the test has not released yet (``len(requests) - released``): a lower bound of what the
    client has in flight.
    """

    def __init__(self) -> None:
        super().__init__(route=self._pick)
        self.routes: dict[str, deque[Script]] = {}
        self.released = 0
        self.unreleased_at_arrival: list[int] = []
        self.arrival = threading.Condition()

    def route(self, prompt: str, *scripts: Script) -> None:
        self.routes[prompt] = deque(scripts)

    def release(self, gate: threading.Event) -> None:
        with self.arrival:
            self.released += 1
        gate.set()

    def wait_requests(self, count: int, timeout: float = WAIT) -> bool:
        with self.arrival:
            return self.arrival.wait_for(lambda: len(self.requests) >= count, timeout)

    def _pick(self, request: Recorded) -> Script:
        body = request.json()
        prompt = body["input"] if "input" in body else body["messages"][-1]["content"]
        queue = self.routes.get(prompt.split(" ")[0])
        if not queue:
            return self.default
        return queue.popleft() if len(queue) > 1 else queue[0]

    def _received(self, request: Recorded) -> None:
        with self.arrival:
            super()._received(request)
            self.unreleased_at_arrival.append(len(self.requests) - self.released)
            self.arrival.notify_all()


@pytest.fixture
def routed() -> Iterator[RoutedStandIn]:
    stand_in = RoutedStandIn()
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


def popen_koala(*args: str, stdin: bytes | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start the real command; stdin's bytes (if any) are written and closed at once."""
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    options.update(kwargs)
    proc = subprocess.Popen(
        [*KOALA, *args], stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, **options
    )
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        proc.stdin = None  # communicate() must not touch it again
    return proc


def read_lines(proc: subprocess.Popen[bytes], count: int, timeout: float = WAIT) -> list[bytes]:
    """At least ``count`` whole lines from the process's stdout pipe, read as they come (bounded)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count or not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {count} lines; got {data!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        piece = os.read(fd, 65536)
        assert piece, f"stdout ended after {data!r}"
        data += piece
    return data.split(b"\n")[:-1]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process if it still runs, reap it, close its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(WAIT)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def jobs(*records: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def batch(server: StandIn, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return run_koala("batch", "--base-url", server.base_url, "--retries", "0", *args, stdin=stdin)


# --- koala batch ---------------------------------------------------------------------------


def test_batch_results_in_input_order(routed: RoutedStandIn) -> None:
    routed.route("a", Script([sse("alpha", "!")]))
    routed.route("b", Script([sse("beta")]))
    stdin = jobs(
        {"id": "x1", "prompt": "a one"},
        {"id": 7, "prompt": "b two", "model": "gpt-4o", "system": "Be brief."},
        {
            "id": "x3",
            "prompt": "c three",
            "history": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "v"}],
        },
    )
    result = batch(routed, "-s", "Default system.", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""  # stderr is a pipe: no progress line
    records = ndjson(result.stdout)
    assert [r["id"] for r in records] == ["x1", 7, "x3"]
    assert all(r["ok"] is True for r in records)
    assert [r["text"] for r in records] == ["alpha!", "beta", "Hello, world"]
    for record in records:
        assert record["elapsed_ms"] >= record["first_chunk_ms"] >= 0
    assert [r["model"] for r in records] == ["gpt-4o-mini", "gpt-4o", "gpt-4o-mini"]
    bodies = {r.json()["input"].split(" ")[0]: r.json() for r in routed.requests}
    assert bodies["a"]["input"] == "a one Default system."
    assert bodies["b"] == {"input": "b two Be brief.", "inputHistory": [], "outputHistory": [], "model": "gpt-4o"}
    assert bodies["c"]["inputHistory"] == ["u"]
    assert bodies["c"]["outputHistory"] == ["v"]


def test_batch_lines_from_a_file(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("first\n\nthird line\n")
    result = batch(server, "--lines", str(path))
    assert result.returncode == 0, result.stderr
    records = ndjson(result.stdout)
    assert [(r["id"], r["ok"], r["text"]) for r in records] == [(1, True, "Hello, world"), (3, True, "Hello, world")]
    assert sorted(r.json()["input"] for r in server.requests) == ["first", "third line"]


def test_batch_bad_line_is_reported_and_the_others_run(server: StandIn) -> None:
    stdin = (
        b'{"id": "a", "prompt": "one"}\n{not json\n{"id": "c"}\n[1, 2]\n'
        b'{"id": "d", "prompt": "p", "history": [{"role": "robot", "content": "x"}]}\n{"id": "e", "prompt": "five"}\n'
    )
    result = batch(server, "-", stdin=stdin)
    assert result.returncode == 2, result.stderr
    records = ndjson(result.stdout)
    assert len(records) == 6
    assert [r["ok"] for r in records] == [True, False, False, False, False, True]
    assert [r["id"] for r in (records[0], records[5])] == ["a", "e"]
    assert "robot" in records[4]["error"]["message"]
    for record, line in zip(records[1:5], (2, 3, 4, 5), strict=True):
        assert record["line"] == line
        assert record["error"]["exit_status"] == 2
        assert f"<stdin>:{line}:" in record["error"]["message"]
    assert sorted(r.json()["input"] for r in server.requests) == ["five", "one"]


def test_batch_empty_file_and_bad_options(server: StandIn, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = batch(server, str(empty))
    assert (result.returncode, result.stdout) == (0, b"")
    for args in (["--concurrency", "0", str(empty)], [str(tmp_path / "missing.jsonl")]):
        result = batch(server, *args)
        assert result.returncode == 2
        one_line_error(result)
    assert server.requests == []


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


def test_batch_jobs_get_retries_and_timeouts(routed: RoutedStandIn) -> None:
    held = threading.Event()
    routed.route(
        "flaky", Script([b"later"], status=503, reason="Busy", headers={"Retry-After": "0"}), Script([sse("now ok")])
    )
    routed.route("stalled", Script([sse("start"), held]))
    try:
        result = run_koala(
            "batch",
            "--base-url",
            routed.base_url,
            "--retries",
            "1",
            "--timeout",
            "1",
            stdin=jobs({"id": "f", "prompt": "flaky"}, {"id": "s", "prompt": "stalled"}),
        )
    finally:
        held.set()
    assert result.returncode == 3, result.stderr
    flaky, stalled = ndjson(result.stdout)
    assert (flaky["id"], flaky["ok"], flaky["text"]) == ("f", True, "now ok")
    assert stalled["ok"] is False
    assert stalled["error"]["exit_status"] == 3
    assert "no data" in stalled["error"]["message"]
    assert [r.json()["input"] for r in routed.requests].count("flaky") == 2


def test_batch_jobs_get_max_time(routed: RoutedStandIn) -> None:
    held = threading.Event()
    routed.route("slow", Script([sse("start"), held]))
    try:
        result = run_koala(
            "batch",
            "--base-url",
            routed.base_url,
            "--retries",
            "0",
            "--max-time",
            "1",
            "--lines",
            stdin=b"slow one\nquick one\n",
        )
    finally:
        held.set()
    assert result.returncode == 3, result.stderr
    slow, quick = ndjson(result.stdout)
    assert (slow["ok"], slow["error"]["exit_status"]) == (False, 3)
    assert "--max-time" in slow["error"]["message"]
    assert (quick["id"], quick["ok"]) == (2, True)


def test_batch_resume_skips_ids_with_an_ok_result(server: StandIn, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text(
        '{"id": "a", "ok": true, "text": "x"}\n{"id": "b", "ok": false, "error": {"message": "m", "exit_status": 4}}\n'
        '{"id": 3, "ok": true, "text": "y"}\nnot json\n'
    )
    stdin = jobs(
        {"id": "a", "prompt": "pa"}, {"id": "b", "prompt": "pb"}, {"id": "3", "prompt": "p3"}, {"id": 3, "prompt": "pi"}
    )
    result = batch(server, "--resume", str(out), stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in ndjson(result.stdout)] == ["b", "3"]
    assert sorted(r.json()["input"] for r in server.requests) == ["p3", "pb"]


def test_batch_resume_with_a_missing_output_runs_everything(server: StandIn, tmp_path: Path) -> None:
    result = batch(server, "--lines", "--resume", str(tmp_path / "none.jsonl"), stdin=b"x\ny\n")
    assert result.returncode == 0
    assert [r["id"] for r in ndjson(result.stdout)] == [1, 2]


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


def test_batch_progress_line_goes_to_a_terminal_stderr(server: StandIn) -> None:
    master, slave = os.openpty()
    try:
        proc = popen_koala(
            "batch", "--base-url", server.base_url, "--retries", "0", "--lines", stdin=b"a\nb\n", stderr=slave
        )
        os.close(slave)
        slave = -1
        seen = b""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:  # read the terminal until the process lets go of it
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            if not ready:
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
    assert proc.returncode == 0
    assert len(ndjson(out)) == 2  # stdout stays pure NDJSON
    assert b"2 done, 0 failed" in seen


def test_batch_without_input_on_a_terminal_is_a_usage_error(server: StandIn) -> None:
    master, slave = os.openpty()
    try:
        result = subprocess.run(
            [*KOALA, "batch", "--base-url", server.base_url],
            stdin=slave,
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert result.returncode == 2
    assert result.stdout == b""
    assert "no input" in one_line_error(result)


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


# --- koala ask --dry-run -------------------------------------------------------------------

HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "my name is Ann"},
    {"role": "assistant", "content": "Hello Ann"},
    {"role": "user", "content": "I live in Oslo"},
    {"role": "assistant", "content": "Nice"},
]


def split_dry_run(out: bytes) -> tuple[str, dict[str, str], Any]:
    head, _, body = out.decode().partition("\n\n")
    request_line, *header_lines = head.split("\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return request_line, headers, json.loads(body)


def test_dry_run_prints_the_request_without_sending_it(server: StandIn, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", HISTORY)
    before = path.read_bytes()
    result = run_koala(
        "ask",
        "--dry-run",
        "--base-url",
        server.base_url,
        "-H",
        str(path),
        "-s",
        "Answer in English.",
        "--api-key",
        "sk-SECRET-123",
        "-m",
        "gpt-4o",
        "what is my name?",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert b"SECRET" not in result.stdout
    request_line, headers, body = split_dry_run(result.stdout)
    assert request_line == f"POST {server.base_url}/api/gpt/"
    assert headers["Authorization"] == "Bearer ***"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "text/event-stream"
    # system lines join the new input; user and assistant turns go to their histories
    assert body == {
        "input": "what is my name? Be brief. Answer in English.",
        "inputHistory": ["my name is Ann", "I live in Oslo"],
        "outputHistory": ["Hello Ann", "Nice"],
        "model": "gpt-4o",
    }
    assert server.requests == []
    assert path.read_bytes() == before


def test_dry_run_json_is_one_object(server: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOALA_API_KEY", "env-secret-key")
    result = run_koala("ask", "--dry-run", "--json", "--base-url", server.base_url, "--web-search", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"\n") == 1
    assert b"env-secret-key" not in result.stdout + result.stderr
    record = json.loads(result.stdout)
    assert set(record) == {"method", "url", "headers", "body"}
    assert record["method"] == "POST"
    assert record["url"] == f"{server.base_url}/api/gpt/"
    assert record["headers"]["Authorization"] == "Bearer ***"
    assert record["headers"]["Flag-Real-Time-Data"] == "true"
    assert record["body"] == {"input": "hi", "inputHistory": [], "outputHistory": [], "model": "gpt-4o-mini"}
    assert server.requests == []


def test_dry_run_needs_no_server(tmp_path: Path) -> None:
    url = closed_base_url()
    result = run_koala("ask", "--dry-run", "--base-url", url, "--retries", "0", "hi", stdin=b"doc\n")
    assert result.returncode == 0, result.stderr
    _, headers, body = split_dry_run(result.stdout)
    assert body["input"] == "doc\n\nhi"
    assert "Authorization" not in headers
    assert not (tmp_path / "chat.jsonl").exists()


def test_dry_run_openai_maps_history_to_messages(
    server: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    path = write_jsonl(tmp_path / "chat.jsonl", HISTORY)
    result = run_koala(
        "ask",
        "--dry-run",
        "--json",
        "--provider",
        "openai",
        "--base-url",
        server.base_url,
        "-H",
        str(path),
        "-s",
        "Answer in English.",
        "--max-turns",
        "1",
        "again?",
    )
    assert result.returncode == 0, result.stderr
    assert b"sk-openai-secret" not in result.stdout
    record = json.loads(result.stdout)
    assert record["url"] == f"{server.base_url}/v1/chat/completions"
    assert record["headers"]["Authorization"] == "Bearer ***"
    assert record["body"] == {
        "model": "gpt-4o-mini",
        "messages": [
            HISTORY[0],
            *HISTORY[3:],
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": "again?"},
        ],
        "stream": True,
    }
    assert server.requests == []


def test_dry_run_with_a_bad_history_is_a_usage_error(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text('{"role": "user", "content": "a"}\n{"role": "user"\n')
    result = run_koala("ask", "--dry-run", "--base-url", server.base_url, "-H", str(path), "hi")
    assert result.returncode == 2
    assert f"{path}:2:" in one_line_error(result)
    assert result.stdout == b""


def test_dry_run_masks_credentials_in_the_base_url() -> None:
    url = closed_base_url().replace("http://", "http://ann:hunter2@")
    for flags in ([], ["--json"]):
        result = run_koala("ask", "--dry-run", *flags, "--base-url", url, "hi")
        assert result.returncode == 0, result.stderr
        assert b"hunter2" not in result.stdout


def test_base_url_credentials_stay_out_of_origin_and_referer(server: StandIn) -> None:
    url = server.base_url.replace("http://", "http://ann:hunter2@")
    result = run_koala("ask", "--base-url", url, "--retries", "0", "hi")
    assert result.returncode == 0, result.stderr
    headers = server.requests[0].headers
    assert headers["origin"] == server.base_url
    assert "hunter2" not in headers["referer"]


# --- koala ask --stats and --max-turns -----------------------------------------------------

STATS = re.compile(r"koala: stats: first chunk (\d+) ms, total (\d+) ms, (\d+) chunks, (\d+) chars, (\d+) chars/s\n")


def assert_rate(rate: int, chars: int, elapsed_ms: float) -> None:
    """``rate`` chars/s over ``elapsed_ms`` gives ``chars``, within the rounding of the figures."""
    assert rate * elapsed_ms / 1000 == pytest.approx(chars, abs=0.5 * elapsed_ms / 1000 + rate * 0.0006 + 0.01)


def test_stats_line_on_stderr(server: StandIn) -> None:
    server.push(Script([sse("Hel", "lo ", "wörld", done=True)]))
    result = run_koala("ask", "--base-url", server.base_url, "--retries", "0", "--stats", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello wörld\n".encode()
    match = STATS.fullmatch(result.stderr.decode())
    assert match, result.stderr
    first, total, chunks, chars, rate = map(int, match.groups())
    assert (chunks, chars) == (3, 11)
    assert 0 <= first <= total
    assert_rate(rate, chars, total)


def test_stats_match_the_json_done_record(server: StandIn) -> None:
    gate = threading.Event()
    server.push(Script([sse("early"), gate, sse(" and late", done=True)]))
    proc = popen_koala("ask", "--base-url", server.base_url, "--retries", "0", "--stats", "--json", "hi")
    try:
        read_lines(proc, 2)  # start and the first chunk, before the server goes on
        gate.set()
        out, err = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
        stop(proc)
    assert proc.returncode == 0, err
    done = ndjson(out)[-1]
    assert done["type"] == "done"
    match = STATS.fullmatch(err.decode())
    assert match, err
    first, total, chunks, chars, rate = map(int, match.groups())
    assert (chunks, chars) == (done["chunks"], done["chars"]) == (2, len("early and late"))
    assert abs(first - done["first_chunk_ms"]) <= 1
    assert abs(total - done["elapsed_ms"]) <= 1
    assert done["first_chunk_ms"] <= done["elapsed_ms"]
    assert_rate(rate, done["chars"], done["elapsed_ms"])


def test_stats_without_the_flag_stderr_stays_empty(server: StandIn) -> None:
    result = run_koala("ask", "--base-url", server.base_url, "hi")
    assert (result.returncode, result.stderr) == (0, b"")


def long_history(turns: int) -> list[dict[str, str]]:
    lines = [{"role": "system", "content": "Be brief."}]
    for n in range(1, turns + 1):
        lines += [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]
    return lines


@pytest.mark.parametrize(("turns", "sent"), [(2, [4, 5]), (0, []), (9, [1, 2, 3, 4, 5])])
def test_max_turns_sends_the_last_turns_and_keeps_the_file(
    server: StandIn, tmp_path: Path, turns: int, sent: list[int]
) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", long_history(5))
    before = path.read_bytes()
    server.push(Script([sse("fresh")]))
    args = ("ask", "--base-url", server.base_url, "--retries", "0", "-H", str(path), "--max-turns", str(turns), "new")
    result = run_koala(*args)
    assert result.returncode == 0, result.stderr
    assert server.requests[0].json() == {
        "input": "new Be brief.",
        "inputHistory": [f"q{n}" for n in sent],
        "outputHistory": [f"a{n}" for n in sent],
        "model": "gpt-4o-mini",
    }
    data = path.read_bytes()
    assert data.startswith(before)
    assert [json.loads(line) for line in data[len(before) :].splitlines()] == [
        {"role": "user", "content": "new"},
        {"role": "assistant", "content": "fresh"},
    ]


def test_max_turns_negative_is_a_usage_error(server: StandIn) -> None:
    result = run_koala("ask", "--base-url", server.base_url, "--max-turns", "-1", "hi")
    assert result.returncode == 2
    one_line_error(result)
    assert server.requests == []


# --- koala models, history show, completion ------------------------------------------------


@pytest.mark.parametrize("provider", ["koala", "openai"])
def test_models(provider: str) -> None:
    result = run_koala("models", "--provider", provider)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert "gpt-4o-mini (default)" in lines
    assert sum(line.endswith(" (default)") for line in lines) == 1
    assert len(lines) >= 2
    as_json = run_koala("models", "--json", "--provider", provider)
    records = ndjson(as_json.stdout)
    assert [r["id"] for r in records] == [line.removesuffix(" (default)") for line in lines]
    assert [r["id"] for r in records if r["default"] is True] == ["gpt-4o-mini"]
    assert {r["provider"] for r in records} == {provider}


def test_models_provider_from_env_and_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOALA_PROVIDER", "openai")
    assert {r["provider"] for r in ndjson(run_koala("models", "--json").stdout)} == {"openai"}
    result = run_koala("models", "--provider", "nosuch")
    assert result.returncode == 2
    assert result.stdout == b""
    assert "nosuch" in one_line_error(result)


def test_history_show(tmp_path: Path) -> None:
    records = [*HISTORY, {"role": "user", "content": "multi\nline", "extra": 1}]
    path = write_jsonl(tmp_path / "chat.jsonl", records)
    result = run_koala("history", "show", str(path))
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    positions = [text.index(m["content"]) for m in records]
    assert positions == sorted(positions)
    assert "── system" in text
    assert "── user (1)" in text
    assert "── assistant (2)" in text
    assert "── user (3)" in text
    assert "multi\nline" in text
    as_json = run_koala("history", "show", "--json", str(path))
    assert as_json.returncode == 0
    assert ndjson(as_json.stdout) == records


def test_history_show_json_passes_lines_through(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes('{"role": "user", "content": "café 😀"}\n{"role": "assistant", "content": "\\u2028x"}\n'.encode())
    result = run_koala("history", "show", "--json", str(path))
    assert result.returncode == 0
    assert ndjson(result.stdout) == [
        {"role": "user", "content": "café 😀"},
        {"role": "assistant", "content": "\u2028x"},
    ]


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_history_show_malformed_and_missing(tmp_path: Path, json_flag: list[str]) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text('{"role": "user", "content": "a"}\n\n{"role": "assistant", "content": 5}\n')
    result = run_koala("history", "show", *json_flag, str(path))
    assert result.returncode == 2
    assert result.stdout == b""
    assert f"{path}:3:" in one_line_error(result)
    missing = run_koala("history", "show", *json_flag, str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2
    assert missing.stdout == b""
    assert "nope.jsonl" in one_line_error(missing)


def bash_complete(script: Path, *words: str) -> list[str]:
    """The candidates bash's `_koala` offers for the last word of ``koala WORDS``."""
    program = (
        f'source "{script}"; COMP_WORDS=(koala {" ".join(repr(w) for w in words)}); '
        f"COMP_CWORD={len(words)}; _koala; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program], capture_output=True, timeout=WAIT, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion(tmp_path: Path) -> None:
    result = run_koala("completion", "bash")
    assert result.returncode == 0
    script = tmp_path / "koala.bash"
    script.write_bytes(result.stdout)
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=WAIT, check=False)
    assert check.returncode == 0, check.stderr
    assert bash_complete(script, "as") == ["ask"]
    assert bash_complete(script, "ask", "--js") == ["--json"]
    assert sorted(bash_complete(script, "ask", "-m", "gpt-4o", "--max-t")) == ["--max-time", "--max-turns"]
    assert sorted(bash_complete(script, "")) == sorted(
        ["ask", "batch", "chat", "completion", "config", "history", "models", "roles", "--version", "--help"]
    )
    assert bash_complete(script, "history", "") == ["show"]
    assert bash_complete(script, "history", "show", "--j") == ["--json"]
    assert bash_complete(script, "batch", "--unor") == ["--unordered"]
    assert bash_complete(script, "completion", "z") == ["zsh"]
    (tmp_path / "notes.jsonl").write_text("")
    assert str(tmp_path / "notes.jsonl") in bash_complete(script, "ask", "-H", str(tmp_path / "no"))


def test_zsh_and_fish_completion() -> None:
    zsh = run_koala("completion", "zsh")
    assert zsh.returncode == 0
    assert zsh.stdout.startswith(b"# zsh completion for koala")
    assert b"bashcompinit" in zsh.stdout
    assert b"complete -o filenames -F _koala koala" in zsh.stdout
    if shutil.which("zsh"):
        check = subprocess.run(["zsh", "-n"], input=zsh.stdout, capture_output=True, timeout=WAIT, check=False)
        assert check.returncode == 0, check.stderr
    fish = run_koala("completion", "fish")
    assert fish.returncode == 0
    text = fish.stdout.decode()
    assert "complete -c koala" in text
    assert "-l json" in text
    assert "-l concurrency" in text
    if shutil.which("fish"):
        check = subprocess.run(["fish", "-n"], input=fish.stdout, capture_output=True, timeout=WAIT, check=False)
        assert check.returncode == 0, check.stderr


def test_completion_unknown_shell() -> None:
    result = run_koala("completion", "tcsh")
    assert result.returncode == 2
    assert result.stdout == b""
    assert "tcsh" in one_line_error(result)


# --- --provider openai -----------------------------------------------------------------------


def openai_sse(*texts: str, done: bool = True) -> bytes:
    """An OpenAI chat-completions stream: a role delta, content deltas, a finish chunk, [DONE]."""

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        record = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(record).encode() + b"\n\n"

    body = event({"role": "assistant", "content": ""}) + b"".join(event({"content": t}) for t in texts)
    body += event({}, "stop")
    return body + (b"data: [DONE]\n\n" if done else b"")


@pytest.fixture
def no_openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def openai_ask(server: StandIn, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return run_koala("ask", "--provider", "openai", "--base-url", server.base_url, "--retries", "0", *args, stdin=stdin)


@pytest.mark.usefixtures("no_openai_key")
def test_openai_raw(server: StandIn) -> None:
    server.push(Script([openai_sse("Bon", "jour ", "😀")]))
    result = openai_ask(server, "--api-key", "sk-test", "Say hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Bonjour 😀\n".encode()
    assert result.stderr == b""
    request = server.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.json() == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hi"}],
        "stream": True,
    }


def test_openai_key_and_provider_from_env(server: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOALA_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    server.push(Script([openai_sse("ok")]))
    result = run_koala("ask", "--base-url", server.base_url + "/v1", "--retries", "0", "-m", "gpt-4o", "hi")
    assert result.returncode == 0, result.stderr
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"  # a base ending in /v1 is not doubled
    assert request.headers["authorization"] == "Bearer sk-from-env"
    assert request.json()["model"] == "gpt-4o"


@pytest.mark.usefixtures("no_openai_key")
def test_openai_json_records(server: StandIn) -> None:
    server.push(Script([openai_sse("Hé", " \u2028")]))
    result = openai_ask(server, "--json", "hi")
    assert result.returncode == 0, result.stderr
    records = ndjson(result.stdout)
    assert records[0] == {"type": "start", "model": "gpt-4o-mini"}
    assert [r for r in records[1:-1]] == [{"type": "chunk", "text": "Hé"}, {"type": "chunk", "text": " \u2028"}]
    assert records[-1]["type"] == "done"
    assert records[-1]["text"] == "Hé \u2028"
    assert records[-1]["chunks"] == 2
    assert "authorization" not in server.requests[0].headers  # no key anywhere: none sent


@pytest.mark.usefixtures("no_openai_key")
def test_openai_history_is_sent_and_appended(server: StandIn, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", HISTORY)
    before = path.read_bytes()
    server.push(Script([openai_sse("Ann")]))
    result = openai_ask(server, "-H", str(path), "-s", "One word.", "what is my name?")
    assert result.returncode == 0, result.stderr
    assert server.requests[0].json()["messages"] == [
        *HISTORY,
        {"role": "system", "content": "One word."},
        {"role": "user", "content": "what is my name?"},
    ]
    data = path.read_bytes()
    assert data.startswith(before)
    assert [json.loads(line) for line in data[len(before) :].splitlines()] == [
        {"role": "user", "content": "what is my name?"},
        {"role": "assistant", "content": "Ann"},
    ]


@pytest.mark.usefixtures("no_openai_key")
@pytest.mark.parametrize(
    ("script", "status", "needle"),
    [
        (
            Script(
                [b'{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}'],
                status=401,
                reason="Unauthorized",
                headers={"Content-Type": "application/json"},
            ),
            4,
            "401",
        ),
        (Script([b"busy"], status=500, reason="Internal Server Error"), 4, "HTTP 500"),
        (Script([openai_sse("part", done=False)[:-2] + b"\n\ndata: {broken\n\n"]), 5, "malformed"),
        (Script([b'data: {"error": {"message": "overloaded"}}\n\n']), 5, "unexpected"),
    ],
)
def test_openai_failures(server: StandIn, tmp_path: Path, script: Script, status: int, needle: str) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", HISTORY[:3])
    before = path.read_bytes()
    server.push(script)
    result = openai_ask(server, "--json", "-H", str(path), "hi")
    assert result.returncode == status, result.stderr
    assert needle in one_line_error(result)
    last = ndjson(result.stdout)[-1]
    assert (last["type"], last["exit_status"]) == ("error", status)
    assert path.read_bytes() == before


@pytest.mark.usefixtures("no_openai_key")
def test_openai_batch(routed: RoutedStandIn) -> None:
    routed.route("good", Script([openai_sse("fine")]))
    routed.route("bad", Script([b"no"], status=500, reason="Internal Server Error"))
    result = run_koala(
        "batch",
        "--provider",
        "openai",
        "--base-url",
        routed.base_url,
        "--retries",
        "0",
        "--lines",
        stdin=b"good one\nbad one\n",
    )
    assert result.returncode == 4, result.stderr
    good, bad = ndjson(result.stdout)
    assert (good["id"], good["ok"], good["text"]) == (1, True, "fine")
    assert (bad["id"], bad["ok"], bad["error"]["exit_status"]) == (2, False, 4)
    assert all(r.path == "/v1/chat/completions" for r in routed.requests)
