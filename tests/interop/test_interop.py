"""The real `koala` against endpoints built on real server stacks (issue 9).

sse-starlette on uvicorn and aiohttp serve the koala.sh protocol (``POST /api/gpt/``) and
OpenAI chat completions (``POST /v1/chat/completions``) with their own HTTP and SSE code: CRLF
line ends, ``: ping`` comments, chunked writes cut inside UTF-8 sequences. The scenarios are
picked by ``-m``. The issue-9 cases (error events, finish reasons, message order, URL rules,
`koala models` asking the server) were written before the fixes, as strict xfails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from realservers import AiohttpServer, Step, UvicornServer

ERROR = {"message": "upstream exploded: rate limited by the model host", "type": "server_error", "code": "502"}

SCENARIOS: dict[str, list[Step]] = {
    "hello": [
        ("text", "Hel"),
        ("ping",),
        ("text", "lo, wörld 👋\n"),
        ("text", "second line"),
        ("finish", "stop"),
        ("done",),
    ],
    "echo": [("echo",), ("finish", "stop"), ("done",)],
    "length": [("text", "cut at the tok"), ("finish", "length"), ("done",)],
    # llama-cpp-python's answer to a second request: an empty delta, finish_reason null, [DONE]
    "unfinished": [("text", "e riv"), ("text", "\\ six"), ("finish", None), ("done",)],
    "error-mid": [("text", "partial "), ("ping",), ("error", ERROR)],
    "event-error": [("text", "partial "), ("event_error", '"the model crashed"')],  # data: a JSON string
    "event-error-text": [("text", "partial "), ("event_error", "the model crashed")],
    "empty": [],
}
HELLO = "Hello, wörld 👋\nsecond line"


def _koala(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """The installed `koala` next to this interpreter (else ``python -m koala_cli``), via pipes."""
    script = Path(sys.executable).with_name("koala")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "koala_cli"]
    return subprocess.run(
        [*command, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def uvicorn_server() -> Iterator[UvicornServer]:
    server = UvicornServer(SCENARIOS).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def aiohttp_server() -> Iterator[AiohttpServer]:
    server = AiohttpServer(SCENARIOS, sep="\n", piece=3).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def servers(uvicorn_server: UvicornServer, aiohttp_server: AiohttpServer) -> dict[str, Any]:
    return {"uvicorn": uvicorn_server, "aiohttp": aiohttp_server}


# Each case runs on one stack per provider (a koala run costs ~0.2 s); together they cover both.
BOTH = [
    pytest.param(("uvicorn", "koala"), id="uvicorn-koala"),
    pytest.param(("aiohttp", "openai"), id="aiohttp-openai"),
]
CROSSED = [
    pytest.param(("aiohttp", "koala"), id="aiohttp-koala"),
    pytest.param(("uvicorn", "openai"), id="uvicorn-openai"),
]


def ask(
    stack: UvicornServer | AiohttpServer, provider: str, model: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``koala ask`` to the stack; the openai base URL has no path (``/v1`` is added before and after issue 9)."""
    return _koala("ask", "--provider", provider, "--base-url", stack.base_url, "--retries", "0", "-m", model, *args)


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- replies that work today --------------------------------------------------------------------


@pytest.mark.parametrize("where", [*BOTH, *CROSSED])
def test_exact_text_through_pings_crlf_and_chunked_writes(servers: dict[str, Any], where: tuple[str, str]) -> None:
    stack, provider = servers[where[0]], where[1]
    done = ask(stack, provider, "hello", "hi")
    assert (done.returncode, done.stdout, done.stderr) == (0, HELLO + "\n", "")
    path, body = stack.state.requests[-1]
    assert path == ("/api/gpt/" if provider == "koala" else "/v1/chat/completions")
    assert body["model"] == "hello"


@pytest.mark.parametrize("where", BOTH)
def test_json_records(servers: dict[str, Any], where: tuple[str, str]) -> None:
    done = ask(servers[where[0]], where[1], "hello", "--json", "hi")
    assert (done.returncode, done.stderr) == (0, "")
    got = records(done.stdout)
    assert got[0] == {"type": "start", "model": "hello"}
    assert {r["type"] for r in got[1:-1]} == {"chunk"}
    assert "".join(r["text"] for r in got[1:-1]) == HELLO
    assert got[-1]["type"] == "done"
    assert (got[-1]["text"], got[-1]["model"], got[-1]["chars"]) == (HELLO, "hello", len(HELLO))


@pytest.mark.parametrize("where", CROSSED)
def test_history_two_turns(servers: dict[str, Any], where: tuple[str, str], tmp_path: Path) -> None:
    """The first reply ends with finish_reason stop (openai): it is complete and saved."""
    stack, provider = servers[where[0]], where[1]
    history = tmp_path / "chat.jsonl"
    first = ask(stack, provider, "hello", "-H", str(history), "my name is Ann")
    assert (first.returncode, first.stdout, first.stderr) == (0, HELLO + "\n", "")
    assert [[m["role"], m["content"]] for m in lines(history)] == [["user", "my name is Ann"], ["assistant", HELLO]]
    second = ask(stack, provider, "echo", "-H", str(history), "what is my name?")
    sent = [["user", "my name is Ann"], ["assistant", HELLO], ["user", "what is my name?"]]
    assert (second.returncode, json.loads(second.stdout), second.stderr) == (0, sent, "")
    assert [[m["role"], m["content"]] for m in lines(history)] == [*sent, ["assistant", second.stdout.rstrip("\n")]]


def test_openai_base_url_with_v1(uvicorn_server: UvicornServer) -> None:
    done = _koala("ask", "--provider", "openai", "--base-url", uvicorn_server.base_url + "/v1", "-m", "hello", "hi")
    assert (done.returncode, done.stdout, done.stderr) == (0, HELLO + "\n", "")
    assert uvicorn_server.state.requests[-1][0] == "/v1/chat/completions"


# --- issue 9: what real servers do that koala does not handle yet --------------------------------


@pytest.mark.parametrize("where", BOTH)
def test_error_event_mid_stream(servers: dict[str, Any], where: tuple[str, str], tmp_path: Path) -> None:
    history = tmp_path / "chat.jsonl"
    done = ask(servers[where[0]], where[1], "error-mid", "-H", str(history), "hi")
    assert (done.returncode, done.stdout) == (4, "partial \n")
    assert done.stderr.startswith("koala: error: ") and done.stderr.count("\n") == 1
    assert ERROR["message"] in done.stderr and ERROR["code"] in done.stderr
    assert '{"error"' not in done.stderr
    assert not history.exists()


def test_error_event_json_record(uvicorn_server: UvicornServer) -> None:
    done = ask(uvicorn_server, "openai", "error-mid", "--json", "hi")
    got = records(done.stdout)
    assert done.returncode == 4
    assert got[-2] == {"type": "chunk", "text": "partial "}
    assert got[-1]["type"] == "error" and got[-1]["exit_status"] == 4
    assert ERROR["message"] in got[-1]["message"]


@pytest.mark.parametrize(
    ("where", "scenario"),
    [
        pytest.param(("aiohttp", "koala"), "event-error", id="aiohttp-koala-json"),
        pytest.param(("uvicorn", "openai"), "event-error-text", id="uvicorn-openai-text"),
    ],
)
def test_sse_error_event(servers: dict[str, Any], where: tuple[str, str], scenario: str, tmp_path: Path) -> None:
    history = tmp_path / "chat.jsonl"
    done = ask(servers[where[0]], where[1], scenario, "-H", str(history), "hi")
    assert (done.returncode, done.stdout) == (4, "partial \n")
    assert done.stderr.startswith("koala: error: ") and "the model crashed" in done.stderr
    assert not history.exists()


def test_finish_reason_length(aiohttp_server: AiohttpServer) -> None:
    done = ask(aiohttp_server, "openai", "length", "--json", "hi")
    assert (done.returncode, records(done.stdout)[-1]["finish_reason"]) == (0, "length")
    assert "".join(r.get("text", "") for r in records(done.stdout)[1:-1]) == "cut at the tok"
    assert "length" in done.stderr and "error" not in done.stderr


def test_no_finish_reason_is_incomplete(uvicorn_server: UvicornServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.jsonl"
    done = ask(uvicorn_server, "openai", "unfinished", "-H", str(history), "hi")
    assert done.returncode not in (0, 1)  # 1 would be a crash
    assert done.stdout == "e riv\\ six\n"
    assert done.stderr.startswith("koala: error: ") and done.stderr.count("\n") == 1
    assert not history.exists()


def test_openai_system_messages_first(aiohttp_server: AiohttpServer, tmp_path: Path) -> None:
    history = tmp_path / "chat.jsonl"
    history.write_text(
        '{"role": "system", "content": "Be brief."}\n'
        '{"role": "user", "content": "q1"}\n'
        '{"role": "assistant", "content": "a1"}\n',
        encoding="utf-8",
    )
    done = ask(aiohttp_server, "openai", "echo", "-H", str(history), "-s", "Answer in one word.", "q2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        ["system", "Be brief."],
        ["system", "Answer in one word."],
        ["user", "q1"],
        ["assistant", "a1"],
        ["user", "q2"],
    ]


@pytest.mark.parametrize("where", BOTH)
def test_empty_event_stream(servers: dict[str, Any], where: tuple[str, str]) -> None:
    done = ask(servers[where[0]], where[1], "empty", "hi")
    assert (done.returncode, done.stdout) == (5, "")
    assert done.stderr.startswith("koala: error: ") and "ended the reply without sending anything" in done.stderr
    assert "not an event stream" not in done.stderr and "instead of an event stream" not in done.stderr


def test_openai_base_url_api_root(aiohttp_server: AiohttpServer) -> None:
    base = aiohttp_server.base_url + "/v1beta/openai/"
    done = _koala("ask", "--provider", "openai", "--base-url", base, "--retries", "0", "-m", "hello", "hi")
    assert (done.returncode, done.stdout, done.stderr) == (0, HELLO + "\n", "")


def test_models_asks_the_server(uvicorn_server: UvicornServer) -> None:
    done = _koala("models", "--provider", "openai", "--base-url", uvicorn_server.base_url, "--json")
    assert (done.returncode, done.stderr) == (0, "")
    assert "mock-small" in done.stdout and "mock-large" in done.stdout
