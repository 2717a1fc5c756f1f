"""`koala ask` in process against the loopback stand-in: the prompt, raw and NDJSON output,
history files, failures, --dry-run, --stats and --max-turns.  (Pipes and signals: tests/process/.)"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import HISTORY, closed_base_url, invoke, ndjson, one_line_error, write_jsonl
from standin import DROP, Pause, Script, StandIn, sse


def ask(server: StandIn, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return invoke("ask", "--base-url", server.base_url, "--retries", "0", *args, stdin=stdin)


def test_version_and_help() -> None:
    assert invoke("--version").stdout.startswith(b"koala ")
    help_text = invoke("ask", "--help").stdout.decode()
    for needle in ("--json", "--history", "Exit status", "130"):
        assert needle in help_text
    assert "\x1b[" not in help_text


def test_prompt_from_arguments(server: StandIn) -> None:
    result = ask(server, "Translate", "to French")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Hello, world\n"
    assert result.stderr == b""
    assert server.requests[0].json()["input"] == "Translate to French"
    assert server.requests[0].path == "/api/gpt/"


def test_prompt_from_stdin(server: StandIn) -> None:
    assert ask(server, stdin=b"hi\n\n").returncode == 0
    assert server.requests[0].json()["input"] == "hi"


def test_stdin_then_blank_line_then_arguments(server: StandIn) -> None:
    assert ask(server, "summarise", stdin=b"line 1\nline 2\n").returncode == 0
    assert server.requests[0].json()["input"] == "line 1\nline 2\n\nsummarise"


@pytest.mark.parametrize("stdin", [b"", b"   \n\n", None])
def test_no_prompt_is_a_usage_error(server: StandIn, stdin: bytes | None) -> None:
    result = ask(server, stdin=stdin)
    assert result.returncode == 2
    assert result.stdout == b""
    assert "prompt" in one_line_error(result)
    assert server.requests == []


def test_stdin_not_utf8(server: StandIn) -> None:
    result = ask(server, stdin=b"caf\xe9\n")
    assert result.returncode == 2
    assert "UTF-8" in one_line_error(result)
    assert server.requests == []


@pytest.mark.parametrize(
    "args", [["--bogus"], ["--timeout", "0"], ["--timeout", "abc"], ["--retries", "-1"], ["--max-time", "-2"]]
)
def test_bad_arguments(server: StandIn, args: list[str]) -> None:
    result = ask(server, *args, "hi")
    assert result.returncode == 2
    one_line_error(result)
    assert server.requests == []


def test_bad_base_url() -> None:
    result = invoke("ask", "--base-url", "ftp://x", "hi")
    assert result.returncode == 2
    assert "--base-url" in one_line_error(result)


def test_reply_ending_in_newline_gets_no_extra(server: StandIn) -> None:
    server.push(Script([sse("line\n")]))
    assert ask(server, "hi").stdout == b"line\n"


def test_json_records(server: StandIn) -> None:
    server.push(Script([sse("Hé", " \u2028", "😀\n", done=True)]))
    result = ask(server, "--json", "hi")
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines(keepends=False)
    records = [json.loads(line) for line in result.stdout.split(b"\n") if line]
    assert len(records) == 5, lines
    assert records[0] == {"type": "start", "model": "gpt-4o-mini"}
    assert [r["text"] for r in records[1:4]] == ["Hé", " \u2028", "😀\n"]
    assert all(r["type"] == "chunk" for r in records[1:4])
    done = records[4]
    assert done["type"] == "done"
    assert done["text"] == "Hé \u2028😀\n"
    assert done["elapsed_ms"] >= done["first_chunk_ms"] >= 0
    assert "Hé".encode() in result.stdout  # ensure_ascii=False


def test_json_error_record(server: StandIn) -> None:
    server.push(Script([b"nope"], status=500, reason="Internal Server Error", headers={"Content-Type": "text/plain"}))
    result = ask(server, "--json", "hi")
    assert result.returncode == 4
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["type"] == "error"
    assert last["exit_status"] == 4
    assert "500" in last["message"]
    one_line_error(result)


def test_model_option_and_env(server: StandIn) -> None:
    assert ask(server, "-m", "gpt-4o", "hi").returncode == 0
    env_result = invoke("ask", "--base-url", server.base_url, "hi", env={"KOALA_MODEL": "env-model"})
    assert env_result.returncode == 0
    assert [r.json()["model"] for r in server.requests] == ["gpt-4o", "env-model"]


def test_history_read_and_appended(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    write_jsonl(path, HISTORY[:3])
    server.push(Script([sse("Your name is Ann.")]))
    result = ask(server, "-H", str(path), "-s", "Answer in English.", "what is my name?")
    assert result.returncode == 0, result.stderr
    assert server.requests[0].json() == {
        "input": "what is my name? Be brief. Answer in English.",
        "inputHistory": ["my name is Ann"],
        "outputHistory": ["Hello Ann"],
        "model": "gpt-4o-mini",
    }
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[3:] == [
        {"role": "user", "content": "what is my name?"},
        {"role": "assistant", "content": "Your name is Ann."},
    ]


def test_new_history_file_is_private(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    assert ask(server, "-H", str(path), "hi", stdin=b"doc").returncode == 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text().splitlines()[0]) == {"role": "user", "content": "doc\n\nhi"}


def test_malformed_history_is_left_alone(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    before = b'{"role":"user","content":"a"}\n{"role":"robot","content":"b"}\n'
    path.write_bytes(before)
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 2
    assert f"{path}:2: unknown role" in one_line_error(result)
    assert path.read_bytes() == before
    assert server.requests == []


@pytest.mark.parametrize(
    ("script", "status", "needle"),
    [
        (Script([b"busy"], status=500, reason="Internal Server Error"), 4, "HTTP 500"),
        (
            Script(
                [b"<html><title>Just a moment...</title></html>"],
                status=403,
                reason="Forbidden",
                headers={"Content-Type": "text/html", "cf-ray": "8f"},
            ),
            4,
            "Cloudflare",
        ),
        (Script([b"<html><title>Hi</title></html>"], headers={"Content-Type": "text/html"}), 5, "HTML page"),
        (Script([sse("ok"), b"data: {broken\n\n"]), 5, "malformed"),
        (Script([sse("part"), DROP], framing="length", length=10_000), 3, "dropped"),
    ],
)
def test_failures_keep_history(server: StandIn, tmp_path: Path, script: Script, status: int, needle: str) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(b'{"role":"user","content":"a"}\n{"role":"assistant","content":"b"}\n')
    before = path.read_bytes()
    server.push(script)
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == status, result.stderr
    assert needle in one_line_error(result)
    assert path.read_bytes() == before


def test_chunks_that_arrived_are_kept_on_failure(server: StandIn) -> None:
    server.push(Script([sse("part one"), b"data: {broken\n\n"]))
    result = ask(server, "hi")
    assert result.returncode == 5
    assert result.stdout == b"part one\n"


def test_cannot_connect(tmp_path: Path) -> None:
    result = invoke("ask", "--base-url", closed_base_url(), "--retries", "0", "hi")
    assert result.returncode == 3
    assert "cannot connect" in one_line_error(result)


def test_stalled_stream_times_out(server: StandIn) -> None:
    gate = threading.Event()
    server.push(Script([sse("first"), gate]))
    try:
        result = ask(server, "--timeout", "0.3", "hi")
    finally:
        gate.set()
    assert result.returncode == 3
    assert result.stdout == b"first\n"
    assert "no data" in one_line_error(result)


# --- --dry-run -------------------------------------------------------------------------------


def split_dry_run(out: bytes) -> tuple[str, dict[str, str], Any]:
    head, _, body = out.decode().partition("\n\n")
    request_line, *header_lines = head.split("\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return request_line, headers, json.loads(body)


def test_dry_run_prints_the_request_without_sending_it(server: StandIn, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", HISTORY)
    before = path.read_bytes()
    result = invoke(
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
    result = invoke("ask", "--dry-run", "--json", "--base-url", server.base_url, "--web-search", "hi")
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
    result = invoke("ask", "--dry-run", "--base-url", url, "--retries", "0", "hi", stdin=b"doc\n")
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
    result = invoke(
        "ask",
        "--dry-run",
        "--json",
        "--provider",
        "openai",
        "--base-url",
        server.base_url,
        "-m",
        "gpt-4o-mini",
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
    assert (
        record["body"]
        == {
            "model": "gpt-4o-mini",
            "messages": [  # system messages first, in order
                HISTORY[0],
                {"role": "system", "content": "Answer in English."},
                *HISTORY[3:],
                {"role": "user", "content": "again?"},
            ],
            "stream": True,
        }
    )
    assert server.requests == []


def test_dry_run_with_a_bad_history_is_a_usage_error(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text('{"role": "user", "content": "a"}\n{"role": "user"\n')
    result = invoke("ask", "--dry-run", "--base-url", server.base_url, "-H", str(path), "hi")
    assert result.returncode == 2
    assert f"{path}:2:" in one_line_error(result)
    assert result.stdout == b""


def test_dry_run_masks_credentials_in_the_base_url() -> None:
    url = closed_base_url().replace("http://", "http://ann:hunter2@")
    for flags in ([], ["--json"]):
        result = invoke("ask", "--dry-run", *flags, "--base-url", url, "hi")
        assert result.returncode == 0, result.stderr
        assert b"hunter2" not in result.stdout


def test_dry_run_with_a_lone_surrogate_in_history(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(b'{"role": "user", "content": "a\\ud800"}\n{"role": "assistant", "content": "b"}\n')
    for extra in ([], ["--json"]):
        result = invoke("ask", "--dry-run", *extra, "-H", str(path), "hi")
        assert result.returncode == 0, result.stderr
        assert b"\\ud800" in result.stdout


def test_base_url_credentials_stay_out_of_origin_and_referer(server: StandIn) -> None:
    url = server.base_url.replace("http://", "http://ann:hunter2@")
    result = invoke("ask", "--base-url", url, "--retries", "0", "hi")
    assert result.returncode == 0, result.stderr
    headers = server.requests[0].headers
    assert headers["origin"] == server.base_url
    assert "hunter2" not in headers["referer"]


# --- --stats and --max-turns ------------------------------------------------------------------

STATS = re.compile(r"koala: stats: first chunk (\d+) ms, total (\d+) ms, (\d+) chunks, (\d+) chars, (\d+) chars/s\n")


def assert_rate(rate: int, chars: int, elapsed_ms: float) -> None:
    """``rate`` chars/s over ``elapsed_ms`` gives ``chars``, within the rounding of the figures."""
    assert rate * elapsed_ms / 1000 == pytest.approx(chars, abs=0.5 * elapsed_ms / 1000 + rate * 0.0006 + 0.01)


def test_stats_line_on_stderr(server: StandIn) -> None:
    server.push(Script([sse("Hel", "lo ", "wörld", done=True)]))
    result = invoke("ask", "--base-url", server.base_url, "--retries", "0", "--stats", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello wörld\n".encode()
    match = STATS.fullmatch(result.stderr.decode())
    assert match, result.stderr
    first, total, chunks, chars, rate = map(int, match.groups())
    assert (chunks, chars) == (3, 11)
    assert 0 <= first <= total
    assert_rate(rate, chars, total)


def test_stats_match_the_json_done_record(server: StandIn) -> None:
    server.push(Script([sse("early"), Pause(0.05), sse(" and late", done=True)]))  # a first chunk well before the end
    result = invoke("ask", "--base-url", server.base_url, "--retries", "0", "--stats", "--json", "hi")
    out, err = result.stdout, result.stderr
    assert result.returncode == 0, err
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
    result = invoke("ask", "--base-url", server.base_url, "hi")
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
    result = invoke(*args)
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
    result = invoke("ask", "--base-url", server.base_url, "--max-turns", "-1", "hi")
    assert result.returncode == 2
    one_line_error(result)
    assert server.requests == []
