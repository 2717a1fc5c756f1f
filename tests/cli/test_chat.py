"""`koala chat` with stdin not a terminal, in process: one message a line, replies only on
stdout, the history extended turn by turn.  (On a terminal, and signals: tests/process/.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import HISTORY, invoke, one_line_error, read_jsonl, write_jsonl
from standin import Script, StandIn, sse

PRIOR = HISTORY[1:3]  # a turn, without a system line


def chat(server: StandIn, *args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return invoke("chat", "--base-url", server.base_url, "--retries", "0", *args, stdin=stdin)


def test_piped_one_message_a_line(server: StandIn, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", PRIOR)
    server.push(Script([sse("A1")]), Script([sse("A2\n")]), Script([sse("A3")]))
    stdin = b"first\n\nsecond part \\\n/model gpt-4o\nthird\n"  # piped, a backslash is text
    result = chat(server, "-H", str(path), stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"A1\nA2\nA3\n"  # replies only: no prompt, no greeting
    assert b"> " not in result.stdout
    bodies = [r.json() for r in server.requests]
    assert [b["input"] for b in bodies] == ["first", "second part \\", "third"]
    assert [b["model"] for b in bodies] == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]
    assert bodies[2]["inputHistory"] == ["my name is Ann", "first", "second part \\"]
    assert bodies[2]["outputHistory"] == ["Hello Ann", "A1", "A2\n"]
    assert read_jsonl(path) == [
        *PRIOR,
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "second part \\"},
        {"role": "assistant", "content": "A2\n"},
        {"role": "user", "content": "third"},
        {"role": "assistant", "content": "A3"},
    ]


def test_piped_exit_command_stops_reading(server: StandIn) -> None:
    result = chat(server, stdin=b"one\n/exit\ntwo\n")
    assert result.returncode == 0
    assert [r.json()["input"] for r in server.requests] == ["one"]
    assert result.stderr == b""


def test_piped_empty_input(server: StandIn) -> None:
    result = chat(server, stdin=b"")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert server.requests == []


def test_malformed_history_is_a_usage_error(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text('{"role": "user", "content": "a"}\n{"role": "bot", "content": "b"}\n')
    before = path.read_bytes()
    result = chat(server, "-H", str(path), stdin=b"hi\n")
    assert result.returncode == 2
    assert one_line_error(result).startswith(f"koala: error: {path}:2:")
    assert server.requests == []
    assert path.read_bytes() == before


def test_piped_chat_with_the_openai_provider(server: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-chat")
    path = tmp_path / "chat.jsonl"

    def reply(text: str) -> bytes:
        event = {"choices": [{"delta": {"content": text}, "finish_reason": "stop"}]}
        return b"data: " + json.dumps(event).encode() + b"\n\ndata: [DONE]\n\n"

    server.push(Script([reply("R1")]), Script([reply("R2")]))
    result = chat(server, "--provider", "openai", "-m", "m", "-s", "Be terse.", "-H", str(path), stdin=b"q1\nq2\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"R1\nR2\n"
    assert server.requests[1].path == "/v1/chat/completions"
    assert server.requests[1].headers["authorization"] == "Bearer sk-chat"
    assert server.requests[1].json()["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "R1"},
        {"role": "user", "content": "q2"},
    ]
    assert read_jsonl(path) == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "R1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "R2"},
    ]


def test_piped_failed_turn_sets_the_exit_status(server: StandIn) -> None:
    server.push(Script([b"busy"], status=500, reason="Internal Server Error"), Script([sse("ok")]))
    result = chat(server, stdin=b"first\nsecond\n")
    assert "HTTP 500" in result.stderr.decode()
    assert result.returncode == 4


def test_piped_chat_refuses_a_line_that_is_not_utf8(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    result = invoke("chat", "--base-url", server.base_url, "-H", str(path), stdin=b"caf\xe9\n")
    assert result.returncode == 2
    assert "line 1 is not valid UTF-8" in one_line_error(result)
    assert server.requests == []
    assert not path.exists()
