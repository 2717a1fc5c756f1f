"""`--provider openai`: an OpenAI-compatible chat-completions server, through the commands."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import HISTORY, invoke, ndjson, one_line_error, write_jsonl
from standin import RoutedStandIn, Script, StandIn

# OPENAI_API_KEY is cleared for every test (conftest): a key is only what a test sets.


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


def openai_ask(server: StandIn, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    base = ["--provider", "openai", "--base-url", server.base_url, "-m", "gpt-4o-mini", "--retries", "0"]
    return invoke("ask", *base, *args, stdin=stdin)


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
    result = invoke("ask", "--base-url", server.base_url + "/v1", "--retries", "0", "-m", "gpt-4o", "hi")
    assert result.returncode == 0, result.stderr
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"  # a base ending in /v1 is not doubled
    assert request.headers["authorization"] == "Bearer sk-from-env"
    assert request.json()["model"] == "gpt-4o"


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


def test_openai_history_is_sent_and_appended(server: StandIn, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", HISTORY)
    before = path.read_bytes()
    server.push(Script([openai_sse("Ann")]))
    result = openai_ask(server, "-H", str(path), "-s", "One word.", "what is my name?")
    assert result.returncode == 0, result.stderr
    assert (
        server.requests[0].json()["messages"]
        == [  # system messages first, in order (strict chat templates)
            HISTORY[0],
            {"role": "system", "content": "One word."},
            *HISTORY[1:],
            {"role": "user", "content": "what is my name?"},
        ]
    )
    data = path.read_bytes()
    assert data.startswith(before)
    assert [json.loads(line) for line in data[len(before) :].splitlines()] == [
        {"role": "user", "content": "what is my name?"},
        {"role": "assistant", "content": "Ann"},
    ]


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
        (Script([b'data: {"error": {"message": "overloaded"}}\n\n']), 4, "overloaded"),
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


def test_openai_batch(routed: RoutedStandIn) -> None:
    routed.route("good", Script([openai_sse("fine")]))
    routed.route("bad", Script([b"no"], status=500, reason="Internal Server Error"))
    result = invoke(
        "batch",
        "--provider",
        "openai",
        "--base-url",
        routed.base_url,
        "-m",
        "gpt-4o-mini",
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


def test_json_error_message_is_extracted(server: StandIn) -> None:
    body = json.dumps({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
    server.push(
        Script([body.encode()], status=401, reason="Unauthorized", headers={"Content-Type": "application/json"})
    )
    result = openai_ask(server, "hi")
    assert result.returncode == 4
    message = one_line_error(result)
    assert "Incorrect API key provided" in message
    assert "invalid_request_error" not in message


def test_koala_key_is_not_sent_to_other_providers(server: StandIn) -> None:
    invoke(
        "ask",
        "--provider",
        "openai",
        "-m",
        "m",
        "--base-url",
        server.base_url,
        "hi",
        env={"KOALA_API_KEY": "koala-secret"},
    )
    assert "authorization" not in server.requests[0].headers


def test_openai_needs_a_model(server: StandIn) -> None:
    """No model name is on every OpenAI-compatible server: without -m nothing is sent."""
    base = ["--provider", "openai", "--base-url", server.base_url]
    for command in (["ask", "hi"], ["ask", "--dry-run", "hi"], ["chat"]):
        result = invoke(*command, *base, stdin=b"q\n")
        assert (result.returncode, result.stdout) == (2, b""), command
        assert "-m" in one_line_error(result)
    result = invoke("batch", "--lines", *base, stdin=b"q\n")
    assert result.returncode == 2
    [record] = ndjson(result.stdout)
    assert (record["ok"], record["error"]["exit_status"]) == (False, 2)
    assert "-m" in record["error"]["message"]
    assert server.requests == []
