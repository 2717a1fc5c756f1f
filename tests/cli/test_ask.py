"""The real `koala` command in a subprocess, through pipes, against the loopback stand-in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import KOALA, read_exactly, run_koala
from standin import DROP, Script, StandIn, sse

HISTORY_LINES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "my name is Ann"},
    {"role": "assistant", "content": "Hello Ann"},
]


def ask(server: StandIn, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return run_koala("ask", "--base-url", server.base_url, "--retries", "0", *args, stdin=stdin)


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert err.count("\n") == 1, err
    assert err.startswith("koala: error: "), err
    assert "Traceback" not in err
    return err


def test_version_and_help() -> None:
    assert run_koala("--version").stdout.startswith(b"koala ")
    help_text = run_koala("ask", "--help").stdout.decode()
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
    result = run_koala("ask", "--base-url", "ftp://x", "hi")
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
    env_result = subprocess.run(
        [*KOALA, "ask", "--base-url", server.base_url, "hi"],
        env={**os.environ, "KOALA_MODEL": "env-model"},
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    assert env_result.returncode == 0
    assert [r.json()["model"] for r in server.requests] == ["gpt-4o", "env-model"]


def test_history_read_and_appended(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in HISTORY_LINES))
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
    closed = StandIn()  # never started, then closed: nobody listens on its port
    url = closed.base_url
    closed.stop()
    result = run_koala("ask", "--base-url", url, "--retries", "0", "hi")
    assert result.returncode == 3
    assert "cannot connect" in one_line_error(result)


def test_stalled_stream_times_out(server: StandIn) -> None:
    gate = threading.Event()
    server.push(Script([sse("first"), gate]))
    try:
        result = ask(server, "--timeout", "0.5", "hi")
    finally:
        gate.set()
    assert result.returncode == 3
    assert result.stdout == b"first\n"
    assert "no data" in one_line_error(result)


def _start(server: StandIn, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.Popen(
        [*KOALA, "ask", "--base-url", server.base_url, "--retries", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_first_chunk_reaches_the_pipe_while_the_server_pauses(server: StandIn, json_flag: list[str]) -> None:
    gate = threading.Event()
    server.push(Script([sse("early"), gate, sse(" late")]))
    proc = _start(server, *json_flag, "hi")
    try:
        expected = b"early" if not json_flag else b'{"type":"start","model":"gpt-4o-mini"}\n'
        first = read_exactly(proc.stdout.fileno(), len(expected))
        assert first == expected  # arrived although the server is still waiting on the gate
        if json_flag:
            chunk = b'{"type":"chunk","text":"early"}\n'
            assert read_exactly(proc.stdout.fileno(), len(chunk)) == chunk
    finally:
        gate.set()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_reply(server: StandIn, tmp_path: Path, signum: int, status: int) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(b'{"role":"user","content":"a"}\n')
    gate = threading.Event()
    server.push(Script([sse("partial"), gate, sse(" rest")]))
    proc = _start(server, "--json", "-H", str(path), "hi")
    try:
        read_exactly(
            proc.stdout.fileno(), len(b'{"type":"start","model":"gpt-4o-mini"}\n{"type":"chunk","text":"partial"}\n')
        )
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status
    last = json.loads(out.splitlines()[-1])
    assert last["type"] == "error"
    assert last["exit_status"] == status
    assert b"Traceback" not in err
    assert err.decode().count("\n") == 1
    assert path.read_bytes() == b'{"role":"user","content":"a"}\n'


def test_closed_stdout_is_quiet(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    server.push(Script([sse("x" * 50) * 2000]))
    shell = f"{' '.join(KOALA)} ask --base-url {server.base_url} -H {path} hi | head -c 5"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    result = subprocess.run(
        ["bash", "-c", shell], capture_output=True, timeout=30, check=False, env=env, stdin=subprocess.DEVNULL
    )
    assert result.stdout == b"xxxxx"
    assert result.stderr == b""
    assert not path.exists()


def test_concurrent_runs_on_one_history(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    for n in range(8):
        server.push(Script([sse(f"reply {n} ", "end")]))
    procs = [_start(server, "-H", str(path), f"question {n}") for n in range(8)]
    for proc in procs:
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 16
    users = lines[0::2]
    assistants = lines[1::2]
    assert all(m["role"] == "user" for m in users)
    assert all(m["role"] == "assistant" for m in assistants)
    assert sorted(m["content"] for m in users) == [f"question {n}" for n in range(8)]
