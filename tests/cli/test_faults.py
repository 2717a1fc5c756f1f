"""Fault injection through `koala ask`: every failure explicit, tested and harmless.

Each test runs `koala ask` in process against the loopback stand-in and checks the exit
status, stdout, stderr and the history file's bytes before and after.  Servers that misbehave
are scripted with gates (``threading.Event``), never with sleeps.  What needs a real process
(signals, closed pipes, terminals, file-size limits, permissions) is in tests/process/; what
needs no command at all (a disk that fills up mid-write, the decoder's cap) in tests/unit/.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from conftest import (
    HISTORY,
    HISTORY_BYTES,
    HOSTILE,
    assert_inert,
    closed_port,
    error_line,
    history_file,
    invoke,
    one_line_error,
    retry_delay,
)
from standin import DROP, Notify, Pause, Repeat, Script, StandIn, sse

from koala_cli.history import load_history
from koala_cli.sse import MAX_EVENT_BYTES

# --- helpers -------------------------------------------------------------------------------


def koala(*args: str, env: Mapping[str, str | None] | None = None) -> subprocess.CompletedProcess[bytes]:
    """`koala ask ARGS`, in process."""
    return invoke("ask", *args, env=env)


def ask(server: StandIn, *args: str, retries: int = 0) -> subprocess.CompletedProcess[bytes]:
    return koala("--base-url", server.base_url, "--retries", str(retries), *args)


class Stamp(threading.Event):
    """An event that notes when it was set (with ``Notify``: when the server got that far)."""

    at = 0.0

    def set(self) -> None:
        self.at = time.monotonic()
        super().set()


def notices(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    """stderr lines that are not the final error: the retry notices."""
    return [line for line in result.stderr.decode().splitlines() if not line.startswith("koala: error: ")]


# --- retries ---------------------------------------------------------------------------------


def test_retryable_statuses_then_success(server: StandIn) -> None:
    statuses = [429, 502, 503, 504]
    for status in statuses:
        server.push(Script([b"busy"], status=status, reason="Busy", headers={"Retry-After": "0"}))
    result = ask(server, "hi", retries=len(statuses))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Hello, world\n"  # once
    lines = result.stderr.decode().splitlines()
    assert len(lines) == len(statuses)  # one notice a retry
    for line, status in zip(lines, statuses, strict=True):
        assert line.startswith("koala: ") and "error" not in line
        assert str(status) in line
    assert len(server.requests) == len(statuses) + 1


def test_retries_exhausted_names_status_and_attempts(server: StandIn) -> None:
    for _ in range(3):
        server.push(Script([b"busy"], status=503, reason="Service Unavailable", headers={"Retry-After": "0"}))
    result = ask(server, "hi", retries=2)
    assert result.returncode == 4
    assert result.stdout == b""
    message = error_line(result)
    assert "503" in message
    assert "3 attempts" in message
    assert len(notices(result)) == 2
    assert len(server.requests) == 3


def test_retries_zero_disables(server: StandIn) -> None:
    server.push(Script([b"busy"], status=503, reason="Service Unavailable", headers={"Retry-After": "0"}))
    result = ask(server, "hi", retries=0)
    assert result.returncode == 4
    assert "503" in one_line_error(result)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [400, 500])
def test_other_statuses_are_not_retried(server: StandIn, status: int) -> None:
    server.push(Script([b"no"], status=status, reason="No", headers={"Content-Type": "text/plain"}))
    result = ask(server, "hi", retries=3)
    assert result.returncode == 4
    assert str(status) in one_line_error(result)
    assert len(server.requests) == 1


@pytest.mark.usefixtures("quick_backoff")
def test_refused_connection_is_retried_then_reported() -> None:
    result = koala("--base-url", f"http://127.0.0.1:{closed_port()}", "--retries", "1", "hi")
    assert result.returncode == 3
    assert len(notices(result)) == 1
    message = error_line(result)
    assert "cannot connect" in message
    assert "2 attempts" in message


@pytest.mark.usefixtures("quick_backoff")
def test_hangup_before_the_answer_is_retried(server: StandIn) -> None:
    server.push(Script(hangup=True))
    result = ask(server, "hi", retries=1)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Hello, world\n"
    assert len(notices(result)) == 1
    assert len(server.requests) == 2


@pytest.mark.usefixtures("quick_backoff")
def test_silence_before_the_answer_is_retried(server: StandIn) -> None:
    gate = threading.Event()
    server.push(Script(before=[gate]))
    try:
        result = ask(server, "--timeout", "0.3", "hi", retries=1)
    finally:
        gate.set()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Hello, world\n"
    [notice] = notices(result)
    assert "0.3 s" in notice
    assert len(server.requests) == 2


def test_reply_dropped_midway_is_not_retried(server: StandIn, tmp_path: Path) -> None:
    path = history_file(tmp_path)
    server.push(Script([sse("part"), DROP], framing="length", length=10_000), Script([sse("again")]))
    result = ask(server, "-H", str(path), "hi", retries=3)
    assert result.returncode == 3
    assert result.stdout == b"part\n"  # the pipe never sees text twice
    assert "dropped" in one_line_error(result)
    assert len(server.requests) == 1
    assert path.read_bytes() == HISTORY_BYTES


def test_reply_stalled_midway_is_not_retried(server: StandIn) -> None:
    gate = threading.Event()
    server.push(Script([sse("part"), gate]), Script([sse("again")]))
    try:
        result = ask(server, "--timeout", "0.3", "hi", retries=3)
    finally:
        gate.set()
    assert result.returncode == 3
    assert result.stdout == b"part\n"
    one_line_error(result)
    assert len(server.requests) == 1


def test_retry_after_seconds_is_honoured(server: StandIn) -> None:
    server.push(Script([b""], status=429, reason="Too Many Requests", headers={"Retry-After": "1"}))
    result = ask(server, "hi", retries=1)
    assert result.returncode == 0, result.stderr
    [notice] = notices(result)
    assert retry_delay(notice) == 1.0
    assert server.arrivals[1] - server.arrivals[0] >= 0.95


def test_retry_after_http_date_in_the_past_means_now(server: StandIn) -> None:
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    server.push(Script([b""], status=503, reason="Service Unavailable", headers={"Retry-After": past}))
    result = ask(server, "hi", retries=1)
    assert result.returncode == 0, result.stderr
    [notice] = notices(result)
    assert retry_delay(notice) == 0.0  # not the 0.25-0.5 s backoff: the date was understood


def test_cloudflare_challenge_503_retried_then_named(server: StandIn) -> None:
    page = b"<html><head><title>Just a moment...</title></head><body>challenge-platform</body></html>"
    headers = {"Content-Type": "text/html", "cf-ray": "8f00", "Retry-After": "0"}
    for _ in range(2):
        server.push(Script([page], status=503, reason="Service Unavailable", headers=headers))
    result = ask(server, "hi", retries=1)
    assert result.returncode == 4
    message = error_line(result)
    assert "Cloudflare" in message
    assert "2 attempts" in message
    assert "<html" not in result.stderr.decode()


# --- timeouts --------------------------------------------------------------------------------


@contextlib.contextmanager
def unanswered_listener() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connect there hangs until it times out."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        with socket.socket() as probe:
            probe.settimeout(0.1)  # a completed connection is immediate; a dropped SYN hangs
            try:
                probe.connect(("127.0.0.1", port))
            except TimeoutError:
                pass
            else:
                pytest.skip("this kernel completes connections beyond a full accept queue")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_connect_timeout() -> None:
    with unanswered_listener() as port:
        started = time.monotonic()
        result = koala("--base-url", f"http://127.0.0.1:{port}", "--retries", "0", "--timeout", "0.3", "hi")
        elapsed = time.monotonic() - started
    assert result.returncode == 3
    assert "timed out connecting" in one_line_error(result)
    assert elapsed < 10


def test_stalled_stream_ends_within_the_timeout(server: StandIn, tmp_path: Path) -> None:
    path = history_file(tmp_path)
    sent, gate = Stamp(), threading.Event()
    server.push(Script([sse("first"), Notify(sent), gate, sse(" never")]))
    try:
        result = ask(server, "--timeout", "0.5", "-H", str(path), "hi")
        waited = time.monotonic() - sent.at  # from when the server had sent "first" and stalled
    finally:
        gate.set()
    assert sent.is_set()
    assert result.returncode == 3
    assert result.stdout == b"first\n"
    assert "no data" in error_line(result)
    assert 0.4 <= waited < 5  # cut after the timeout, not before, and not much later
    assert path.read_bytes() == HISTORY_BYTES


def test_slow_but_live_stream_is_never_cut(server: StandIn, tmp_path: Path) -> None:
    path = history_file(tmp_path)
    parts: list[object] = []
    for n in range(6):  # 6 x 0.12 s = 0.72 s in all, longer than --timeout 0.5
        parts += [Pause(0.12), sse(f"{n}")]
    server.push(Script(parts))
    started = time.monotonic()
    result = ask(server, "--timeout", "0.5", "-H", str(path), "hi")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started > 0.5
    assert result.stdout == b"012345\n"
    assert result.stderr == b""
    assert path.read_bytes().startswith(HISTORY_BYTES)
    assert len(path.read_bytes().splitlines()) == len(HISTORY) + 2


def test_max_time_bounds_a_live_stream(server: StandIn, tmp_path: Path) -> None:
    path = history_file(tmp_path)
    parts: list[object] = [sse("start ")]
    for _ in range(100):  # 10 s in all
        parts += [Pause(0.1), sse("more ")]
    server.push(Script(parts))
    started = time.monotonic()
    result = ask(server, "--timeout", "1", "--max-time", "0.3", "-H", str(path), "hi")
    assert result.returncode == 3
    assert time.monotonic() - started < 8
    assert result.stdout.startswith(b"start ")
    assert result.stdout.count(b"more ") < 100
    assert "--max-time" in one_line_error(result)
    assert path.read_bytes() == HISTORY_BYTES


def test_max_time_bounds_retry_waits(server: StandIn) -> None:
    server.push(Script([b""], status=503, reason="Service Unavailable", headers={"Retry-After": "20"}))
    started = time.monotonic()
    result = ask(server, "--max-time", "0.3", "hi", retries=2)
    assert result.returncode == 3
    assert time.monotonic() - started < 10  # not the 20 s the server asked for
    assert "--max-time" in error_line(result)


# --- history integrity -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "before",
    [
        pytest.param(
            b'{"role":"user","content":"my name is Ann"}\n{"role":"assistant","content":"Hello Ann"}', id="no-eol"
        ),
        pytest.param(
            b'{"role":"user","content":"my name is Ann"}\r\n{"role":"assistant","content":"Hello Ann"}\r\n', id="crlf"
        ),
        pytest.param(
            b'\xef\xbb\xbf\r\n\n{"role":"user","content":"my name is Ann","extra":1}\r\n  \r\n\t\n'
            b'{"role":"assistant","content":"Hello Ann"}',
            id="bom-blank-lines-crlf-no-eol",
        ),
    ],
)
def test_tolerated_history_quirks(server: StandIn, tmp_path: Path, before: bytes) -> None:
    path = history_file(tmp_path, before)
    result = ask(server, "-H", str(path), "what is my name?")
    assert result.returncode == 0, result.stderr
    sent = server.requests[0].json()
    assert sent["inputHistory"] == ["my name is Ann"]
    assert sent["outputHistory"] == ["Hello Ann"]
    after = path.read_bytes()
    assert after.startswith(before)  # earlier bytes untouched
    added = after[len(before) :]
    if not before.endswith(b"\n"):
        assert added.startswith(b"\n")  # never glued onto the unterminated last line
    new = [json.loads(line) for line in added.splitlines() if line.strip()]
    assert [(m["role"], m["content"]) for m in new] == [("user", "what is my name?"), ("assistant", "Hello, world")]
    # the file as a whole is still a valid history of four turns
    assert [m["content"] for m in load_history(path)] == [
        "my name is Ann",
        "Hello Ann",
        "what is my name?",
        "Hello, world",
    ]


USER = b'{"role":"user","content":"a"}'


@pytest.mark.parametrize(
    ("data", "line", "why"),
    [
        (USER + b"\n{oops\n", 2, "JSON"),
        (USER + b'\n\n{"role":"user","content":"caf\xe9"}\n', 3, "UTF-8"),
        (b"\xef\xbb\xbf" + USER + b"\r\n\xff\xfe\r\n", 2, "UTF-8"),
        (b'["role","user"]\n', 1, "object"),
        (USER + b'\n"just a string"\n', 2, "object"),
        (USER + b"\n42", 2, "object"),
        (b'\r\n\r\n{"role":"robot","content":"b"}\r\n', 3, "role"),
        (b'{"content":"b"}\n', 1, "role"),
        (b'{"role":"user","content":5}\n', 1, "content"),
        (b'{"role":"user","content":["a"]}\n', 1, "content"),
        (b'{"role":"user"}\n', 1, "content"),
    ],
)
def test_malformed_history_is_refused_and_left_alone(
    server: StandIn, tmp_path: Path, data: bytes, line: int, why: str
) -> None:
    path = history_file(tmp_path, data)
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 2
    message = one_line_error(result)
    assert message.startswith(f"koala: error: {path}:{line}: "), message
    assert why in message
    assert result.stdout == b""
    assert path.read_bytes() == data
    assert server.requests == []


def test_malformed_history_with_json_output(server: StandIn, tmp_path: Path) -> None:
    path = history_file(tmp_path, USER + b"\n{oops\n")
    result = ask(server, "--json", "-H", str(path), "hi")
    assert result.returncode == 2
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["type"] == "error"
    assert last["exit_status"] == 2
    assert f"{path}:2:" in last["message"]


def test_history_that_is_a_directory(server: StandIn, tmp_path: Path) -> None:
    result = ask(server, "-H", str(tmp_path), "hi")
    assert result.returncode == 2
    assert str(tmp_path) in one_line_error(result)
    assert server.requests == []


def test_history_in_a_missing_directory(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "chat.jsonl"
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 2
    message = one_line_error(result)
    assert str(path) in message
    assert "does not exist" in message
    assert server.requests == []
    assert not path.parent.exists()


def test_history_with_a_lone_surrogate_can_be_sent(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    server.push(Script([b'data: "broken \\ud800 pair"\n\n']))
    first = ask(server, "-H", str(path), "hi")
    assert first.returncode == 0, first.stderr
    second = ask(server, "-H", str(path), "and now?")
    assert second.returncode == 0, second.stderr[-500:]
    assert len(server.requests) == 2
    assert server.requests[1].json()["outputHistory"][0].startswith("broken ")


@pytest.mark.parametrize("option", [(), ("-s",)], ids=["prompt", "system"])
def test_argument_that_is_not_utf8_is_a_usage_error(server: StandIn, option: tuple[str, ...]) -> None:
    word = os.fsdecode(b"caf\xe9")  # what the interpreter makes of an argument that is not UTF-8
    result = ask(server, *option, word, "ok")
    assert result.returncode == 2
    assert "UTF-8" in one_line_error(result)
    assert server.requests == []


# --- hostile replies -------------------------------------------------------------------------


def test_pipe_output_is_byte_exact(server: StandIn) -> None:
    text = "".join(map(chr, range(1, 0x20))) + "\x7f" + "".join(map(chr, range(0x80, 0xA0))) + HOSTILE + " é😀"
    server.push(Script([sse(text[:10], text[10:40], text[40:])]))
    result = ask(server, "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == text.encode() + b"\n"


def test_ndjson_is_valid_whatever_the_text_holds(server: StandIn) -> None:
    body = (
        b'data: "nul \\u0000 esc \\u001b del \\u007f c1 \\u009b"\n\n'
        b'data: "lone \\ud800 high"\n\n'
        b'data: "lone \\udc00 low \\udfff"\n\n'
        b'data: "seps \xe2\x80\xa8 \xe2\x80\xa9 \xc2\x85"\n\n'
        b'data: "bad \xff\xfe bytes \xed\xa0\x80"\n\n'
        b'data: "quote \\" backslash \\\\ slash \\/"\n\n'
        b'data: {"text": "tab\\tnewline\\n"}\n\n'
        b'data: "cut \xe2\x82"\n\n'
    )
    server.push(Script([body[:37], body[37:101], body[101:]]))
    result = ask(server, "--json", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(b"\n")
    records = [json.loads(line) for line in result.stdout.decode("utf-8").split("\n")[:-1]]  # strict UTF-8, JSON
    chunks = [r["text"] for r in records if r["type"] == "chunk"]
    assert chunks[:4] == [
        "nul \x00 esc \x1b del \x7f c1 \x9b",
        "lone \ud800 high",
        "lone \udc00 low \udfff",
        "seps \u2028 \u2029 \x85",
    ]
    assert chunks[4].startswith("bad \ufffd") and chunks[4].endswith("\ufffd")  # not a crash, not raw bytes
    assert chunks[5:] == ['quote " backslash \\ slash /', "tab\tnewline\n", "cut \ufffd"]
    assert records[-1]["type"] == "done"
    assert records[-1]["text"] == "".join(chunks)


def test_error_messages_are_printable(server: StandIn) -> None:
    body = "oops \x1b]0;pwned\x07 \x1b[2J \x9b31m \r\x08 done".encode()
    server.push(Script([body], status=500, reason="Internal Server Error", headers={"Content-Type": "text/plain"}))
    server.push(Script([b"data: {\x1b[2J \xc2\x9b\n\n"]))
    for result in (ask(server, "hi"), ask(server, "hi")):
        assert result.returncode in (4, 5)
        assert_inert(result.stderr)


# --- bounded memory --------------------------------------------------------------------------

FLOOD = 1 << 16  # one 64 KiB piece of a flood
# Pieces a flood repeats: 4 times the cap even for 4 KiB lines -- a client that does not stop
# reading reaches the end and fails, instead of hanging the test.
ENDLESS = 1 << 13


@pytest.mark.parametrize(
    ("script", "status", "needle"),
    [
        pytest.param(Script([b'data: "', Repeat(b"x" * FLOOD, ENDLESS)]), 5, "", id="line-without-end"),
        pytest.param(Script([b'data: "', Repeat(b"x" * FLOOD, ENDLESS)], framing="chunked"), 5, "", id="chunked"),
        pytest.param(Script([Repeat(b"data: " + b"x" * 4090 + b"\n", ENDLESS)]), 5, "", id="event-without-end"),
        pytest.param(
            Script([b'{"output": "', Repeat(b"x" * FLOOD, ENDLESS)], headers={"Content-Type": "application/json"}),
            5,
            "JSON",
            id="json-body",
        ),
        pytest.param(
            Script([Repeat(b"x" * FLOOD, ENDLESS)], status=500, reason="Oops", headers={"Content-Type": "text/plain"}),
            4,
            "500",
            id="error-body",
        ),
    ],
)
def test_endless_answers_are_cut_off(server: StandIn, script: Script, status: int, needle: str) -> None:
    server.push(script)
    result = ask(server, "hi")
    assert result.returncode == status
    message = one_line_error(result)
    assert len(message) < 1000
    assert needle in message
    if status == 5 and not needle:
        assert re.search(r"larger|longer|too (big|large|long)|exceed", message), message
        assert str(MAX_EVENT_BYTES) in message or "MiB" in message or "MB" in message
    assert result.stdout == b""


def test_oversized_event_after_good_chunks(server: StandIn, tmp_path: Path) -> None:
    path = history_file(tmp_path)
    server.push(Script([sse("kept"), b'data: "', Repeat(b"x" * FLOOD, ENDLESS)]))
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 5
    assert result.stdout == b"kept\n"
    one_line_error(result)
    assert path.read_bytes() == HISTORY_BYTES


# --- what the server answers instead of a reply ----------------------------------------------

CHALLENGE = b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>cf_chl</body></html>"


@pytest.mark.parametrize(
    ("script", "status", "needle"),
    [
        pytest.param(
            Script([CHALLENGE], status=403, reason="Forbidden", headers={"Content-Type": "text/html", "cf-ray": "1"}),
            4,
            "Cloudflare",
            id="403-challenge",
        ),
        pytest.param(
            Script([b""], status=403, reason="Forbidden", headers={"cf-mitigated": "challenge"}),
            4,
            "Cloudflare",
            id="cf-mitigated",
        ),
        pytest.param(Script([CHALLENGE], headers={"Content-Type": "text/html"}), 4, "Cloudflare", id="200-challenge"),
        pytest.param(
            Script([b"<html><title>Welcome to nginx</title></html>"], headers={"Content-Type": "text/html"}),
            5,
            "HTML page",
            id="200-html",
        ),
        pytest.param(Script([b"hello there"], headers={"Content-Type": "text/plain"}), 5, "hello there", id="200-text"),
        pytest.param(
            Script([b'{"status":"queued"}'], headers={"Content-Type": "application/json"}),
            5,
            "queued",
            id="json-without-output",
        ),
        pytest.param(Script([b'data: {"status":"queued"}\n\n']), 5, "queued", id="event-object"),
    ],
)
def test_not_a_reply_is_named(server: StandIn, tmp_path: Path, script: Script, status: int, needle: str) -> None:
    path = history_file(tmp_path)
    server.push(script)
    result = ask(server, "-H", str(path), "hi", retries=2)
    assert result.returncode == status
    message = one_line_error(result)
    assert needle in message
    assert "<html" not in message.lower() and "<!doctype" not in message.lower()
    assert result.stdout == b""
    assert path.read_bytes() == HISTORY_BYTES
    assert len(server.requests) == 1  # 403, 2xx answers and malformed events are not retried


@pytest.mark.parametrize(
    ("script", "needle"),
    [
        pytest.param(Script([b"<html><title>Oops</title></html>"], headers={}), "HTML", id="html-no-type"),
        pytest.param(Script([b'{"error":"rate limited"}']), "rate limited", id="json-as-event-stream"),
    ],
)
def test_body_without_events_is_named(server: StandIn, tmp_path: Path, script: Script, needle: str) -> None:
    path = history_file(tmp_path)
    server.push(script)
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 5
    assert needle in one_line_error(result)
    assert path.read_bytes() == HISTORY_BYTES


def test_drifted_payloads_are_chunks(server: StandIn) -> None:
    events = [
        '"plain "',
        '{"text": "text "}',
        '{"content": "content "}',
        '{"choices": [{"delta": {"role": "assistant"}}]}',
        '{"choices": [{"delta": {"content": "delta"}}]}',
        '{"choices": [{"delta": {}, "finish_reason": "stop"}]}',
    ]
    server.push(Script([b"".join(b"data: " + e.encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"]))
    result = ask(server, "--json", "hi")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records if r["type"] == "chunk"] == ["plain ", "text ", "content ", "delta"]
    assert records[-1]["text"] == "plain text content delta"


def test_non_streaming_json_is_one_chunk(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    server.push(Script([b'{"output": "the whole reply"}'], headers={"Content-Type": "application/json"}))
    result = ask(server, "--json", "-H", str(path), "hi")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r for r in records if r["type"] == "chunk"] == [{"type": "chunk", "text": "the whole reply"}]
    assert json.loads(path.read_bytes().splitlines()[1])["content"] == "the whole reply"


# --- secrets: the API key and proxy credentials ----------------------------------------------

KEY = "sk-test-SECRET-7f3a"


def test_api_key_from_env_and_option_is_sent_as_bearer(server: StandIn) -> None:
    result = koala("--base-url", server.base_url, "--retries", "0", "--json", "hi", env={"KOALA_API_KEY": KEY})
    assert result.returncode == 0
    assert koala("--base-url", server.base_url, "--retries", "0", "--api-key", KEY + "2", "hi").returncode == 0
    assert [r.headers.get("authorization") for r in server.requests] == [f"Bearer {KEY}", f"Bearer {KEY}2"]
    assert server.requests[0].json()["input"] == "hi"


@pytest.mark.parametrize(
    ("script", "debug"),
    [
        (Script([b"boom"], status=500, reason="Internal Server Error", headers={"Content-Type": "text/plain"}), True),
        (Script([sse("partial"), DROP], framing="length", length=1000), True),
        (Script([b"data: {broken\n\n"]), False),
    ],
    ids=["500-debug", "dropped-debug", "malformed"],
)
def test_api_key_never_printed_on_errors(server: StandIn, script: Script, debug: bool) -> None:
    server.push(script)
    env = {"KOALA_API_KEY": KEY}
    result = koala(
        "--base-url", server.base_url, "--retries", "0", "--json", *(["--debug"] if debug else []), "hi", env=env
    )
    assert result.returncode in (3, 4, 5)
    error_line(result, debug=debug)
    assert KEY.encode() not in result.stdout + result.stderr
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_api_key_masked_in_dry_run(server: StandIn) -> None:
    result = ask(server, "--dry-run", "--api-key", KEY, "hi")
    assert result.returncode == 0, result.stderr
    assert b"Bearer" in result.stdout
    assert KEY.encode() not in result.stdout + result.stderr
    assert server.requests == []


def test_api_key_never_printed_when_unreachable() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = koala("--base-url", url, "--retries", "0", "--debug", "--api-key", KEY, "hi")
    assert result.returncode == 3
    error_line(result, debug=True)
    assert KEY.encode() not in result.stdout + result.stderr


def test_api_key_echoed_by_the_server_is_masked(server: StandIn) -> None:
    body = json.dumps({"error": f"invalid api key {KEY}"}).encode()
    server.push(Script([body], status=401, reason="Unauthorized", headers={"Content-Type": "application/json"}))
    result = ask(server, "--api-key", KEY, "--json", "hi")
    assert result.returncode == 4
    assert "401" in one_line_error(result)
    assert KEY.encode() not in result.stdout + result.stderr


@pytest.mark.parametrize("key", [KEY + "\nX", KEY + "é"], ids=["newline", "non-ascii"])
def test_unusable_api_key_is_a_usage_error(server: StandIn, key: str) -> None:
    result = ask(server, "--api-key", key, "hi")
    assert result.returncode == 2
    one_line_error(result)
    assert KEY.encode() not in result.stdout + result.stderr
    assert server.requests == []


def test_unreachable_proxy_is_named_with_its_credentials_masked(server: StandIn) -> None:
    port = closed_port()
    result = ask(server, "--proxy", f"http://user:secret@127.0.0.1:{port}", "--debug", "hi")
    assert result.returncode == 3
    message = error_line(result, debug=True)
    assert "proxy" in message.lower()
    assert f"127.0.0.1:{port}" in message
    assert b"secret" not in result.stdout + result.stderr
    assert server.requests == []


def test_proxy_credentials_from_the_environment_masked(server: StandIn) -> None:
    port = closed_port()
    env = {
        "NO_PROXY": None,
        "HTTP_PROXY": f"http://user:secret@127.0.0.1:{port}",
        "ALL_PROXY": f"http://u:secret@127.0.0.1:{port}",
    }
    result = koala("--base-url", server.base_url, "--retries", "0", "hi", env=env)
    assert result.returncode == 3
    error_line(result)
    assert b"secret" not in result.stderr
    assert server.requests == []


def test_proxy_is_used_with_its_credentials_and_they_stay_hidden(server: StandIn) -> None:
    """The stand-in as a forward proxy: it sees the absolute URL and Proxy-Authorization."""
    proxy = server.base_url.replace("http://", "http://user:secret@")
    refusal = Script([b"auth"], 407, "Proxy Authentication Required", {"Content-Type": "text/plain"})
    server.push(refusal, refusal)
    for debug in ([], ["--debug"]):
        refused = koala("--base-url", "http://koala.invalid", "--retries", "0", "--proxy", proxy, *debug, "hi")
        assert refused.returncode == 3  # the proxy's refusal, not the server's (issue 9)
        assert "407" in error_line(refused, debug=bool(debug))
        assert b"secret" not in refused.stdout + refused.stderr
    passed = koala("--base-url", "http://koala.invalid", "--retries", "0", "--proxy", proxy, "hi")
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout == b"Hello, world\n"
    assert [r.path for r in server.requests] == ["http://koala.invalid/api/gpt/"] * 3
    assert server.requests[0].headers["proxy-authorization"] == "Basic dXNlcjpzZWNyZXQ="  # user:secret


@pytest.mark.parametrize(
    ("proxy", "status"),
    [
        ("ftp://user:secret@127.0.0.1:{port}", 2),
        ("http://user:secret@[::1:{port}", 2),
        ("socks5://user:secret@127.0.0.1:{port}", 3),
    ],
    ids=["scheme", "host", "socks"],
)
def test_bad_or_unreachable_proxy_is_one_masked_line(server: StandIn, proxy: str, status: int) -> None:
    result = ask(server, "--proxy", proxy.format(port=closed_port()), "hi")
    assert result.returncode == status
    one_line_error(result)
    assert b"secret" not in result.stderr


@pytest.mark.parametrize("option", ["--proxy", "--base-url"])
def test_port_out_of_range_is_a_usage_error(server: StandIn, option: str) -> None:
    url = "http://user:secret@127.0.0.1:99999" if option == "--proxy" else "http://127.0.0.1:99999"
    args = ["--proxy", url, "--base-url", server.base_url] if option == "--proxy" else ["--base-url", url]
    result = koala(*args, "--retries", "0", "hi")
    assert result.returncode == 2
    one_line_error(result)
    assert b"secret" not in result.stderr


# --- edges found by review, each a regression test --------------------------------------------


@pytest.mark.parametrize(
    "script",
    [
        Script([sse(done=True)]),
        Script([b'{"output": ""}'], headers={"Content-Type": "application/json"}),
    ],
    ids=["only-done", "empty-json-output"],
)
def test_empty_reply_is_a_protocol_error_and_saves_nothing(server: StandIn, tmp_path: Path, script: Script) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(HISTORY_BYTES)
    server.push(script)
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 5
    assert "empty reply" in one_line_error(result)
    assert result.stdout == b""
    assert path.read_bytes() == HISTORY_BYTES


def test_stream_cut_inside_an_event_is_a_network_error(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    server.push(Script([sse("Hel") + b'data: "lo"']))
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 3
    assert "middle of an event" in one_line_error(result)
    assert result.stdout == b"Hel\n"
    assert not path.exists()


def test_stall_before_the_first_chunk_is_named_as_such(server: StandIn) -> None:
    gate = threading.Event()
    server.push(Script([gate]))
    try:
        result = ask(server, "--timeout", "0.3", "hi")
    finally:
        gate.set()
    assert result.returncode == 3
    assert "waiting for the reply" in one_line_error(result)


def test_cloudflare_challenge_header_is_not_retried(server: StandIn) -> None:
    headers = {"Content-Type": "text/html", "cf-mitigated": "challenge", "Retry-After": "0"}
    server.push(Script([b"<html></html>"], status=503, reason="Service Unavailable", headers=headers))
    result = invoke("ask", "--base-url", server.base_url, "--retries", "3", "hi")
    assert result.returncode == 4
    assert "Cloudflare" in one_line_error(result)
    assert len(server.requests) == 1


def test_history_that_is_not_a_regular_file(server: StandIn) -> None:
    result = ask(server, "-H", "/dev/null", "hi")
    assert result.returncode == 2
    assert "not a regular file" in one_line_error(result)
    assert server.requests == []
