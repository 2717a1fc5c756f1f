"""`koala batch` in process: results in input order, bad lines in their place, retries and
timeouts per job, resume.  (Streaming, concurrency and signals: tests/process/.)"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

from conftest import invoke, jobs, ndjson, one_line_error
from standin import RoutedStandIn, Script, StandIn, sse


def batch(server: StandIn, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return invoke("batch", "--base-url", server.base_url, "--retries", "0", *args, stdin=stdin)


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


def test_batch_jobs_get_retries_and_timeouts(routed: RoutedStandIn) -> None:
    held = threading.Event()
    routed.route(
        "flaky", Script([b"later"], status=503, reason="Busy", headers={"Retry-After": "0"}), Script([sse("now ok")])
    )
    routed.route("stalled", Script([sse("start"), held]))
    try:
        result = invoke(
            "batch",
            "--base-url",
            routed.base_url,
            "--retries",
            "1",
            "--timeout",
            "0.5",
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
        result = invoke(
            "batch",
            "--base-url",
            routed.base_url,
            "--retries",
            "0",
            "--max-time",
            "0.5",
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


def test_batch_line_not_utf8_does_not_stop_the_others(server: StandIn) -> None:
    result = invoke("batch", "--lines", "--base-url", server.base_url, stdin=b"ok\n\xff\nfine\n")
    assert result.returncode == 2
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["ok"] for r in records] == [True, False, True]
    assert records[1]["line"] == 2


def test_batch_resume_with_line_separators_in_the_text(server: StandIn, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "a", "ok": True, "text": "x\u2028y\x85z"}, ensure_ascii=False) + "\n")
    result = invoke("batch", "--resume", str(out), "--base-url", server.base_url, stdin=b'{"id": "a", "prompt": "x"}\n')
    assert result.returncode == 0
    assert result.stdout == b""
    assert server.requests == []


def test_a_line_nested_too_deeply_is_one_bad_line(server: StandIn) -> None:
    deep = '{"id": "b", "prompt": "hi", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    stdin = b'{"id": "a", "prompt": "hi"}\n' + deep.encode() + b'\n{"id": "c", "prompt": "hi"}\n'
    result = invoke("batch", "--base-url", server.base_url, "--retries", "0", stdin=stdin)
    assert result.returncode == 2, result.stderr  # a bad line: the usage status, after the others ran
    a, b, c = ndjson(result.stdout)
    assert (a["id"], a["ok"], c["id"], c["ok"]) == ("a", True, "c", True)
    assert b["ok"] is False and "nested too deeply" in b["error"]["message"]
    assert b"Traceback" not in result.stderr
