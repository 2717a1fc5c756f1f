"""Edges found by review and by trying koala as a new user: each one a regression test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import KOALA, read_exactly, run_koala
from standin import Script, StandIn, sse

from koala_cli.errors import HistoryError
from koala_cli.history import parse_history
from koala_cli.jobs import BadJob, Job, parse_jobs

WAIT = 30.0
HISTORY = b'{"role":"user","content":"a"}\n{"role":"assistant","content":"b"}\n'


def ask(server: StandIn, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return run_koala("ask", "--base-url", server.base_url, "--retries", "0", *args, stdin=stdin)


def one_error(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith("koala: error: "), err
    return err


def quiet_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


@pytest.mark.parametrize("role", ['["user"]', '{"r": 1}', "3"])
def test_unhashable_or_odd_role_is_a_history_error(role: str) -> None:
    with pytest.raises(HistoryError, match="h:1: unknown role"):
        parse_history(f'{{"role": {role}, "content": "x"}}'.encode(), "h")


def test_null_content_is_named() -> None:
    with pytest.raises(HistoryError, match="not null"):
        parse_history(b'{"role": "assistant", "content": null}', "h")


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
    path.write_bytes(HISTORY)
    server.push(script)
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 5
    assert "empty reply" in one_error(result)
    assert result.stdout == b""
    assert path.read_bytes() == HISTORY


def test_stream_cut_inside_an_event_is_a_network_error(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    server.push(Script([sse("Hel") + b'data: "lo"']))
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 3
    assert "middle of an event" in one_error(result)
    assert result.stdout == b"Hel\n"
    assert not path.exists()


def test_stall_before_the_first_chunk_is_named_as_such(server: StandIn) -> None:
    gate = threading.Event()
    server.push(Script([gate]))
    try:
        result = ask(server, "--timeout", "0.5", "hi")
    finally:
        gate.set()
    assert result.returncode == 3
    assert "waiting for the reply" in one_error(result)


def test_cloudflare_challenge_header_is_not_retried(server: StandIn) -> None:
    headers = {"Content-Type": "text/html", "cf-mitigated": "challenge", "Retry-After": "0"}
    server.push(Script([b"<html></html>"], status=503, reason="Service Unavailable", headers=headers))
    result = run_koala("ask", "--base-url", server.base_url, "--retries", "3", "hi")
    assert result.returncode == 4
    assert "Cloudflare" in one_error(result)
    assert len(server.requests) == 1


def test_json_error_message_is_extracted(server: StandIn) -> None:
    body = json.dumps({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
    server.push(
        Script([body.encode()], status=401, reason="Unauthorized", headers={"Content-Type": "application/json"})
    )
    result = ask(server, "--provider", "openai", "hi")
    assert result.returncode == 4
    message = one_error(result)
    assert "Incorrect API key provided" in message
    assert "invalid_request_error" not in message


def test_koala_key_is_not_sent_to_other_providers(server: StandIn) -> None:
    env = {**os.environ, "KOALA_API_KEY": "koala-secret"}
    subprocess.run(
        [*KOALA, "ask", "--provider", "openai", "--base-url", server.base_url, "hi"],
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=WAIT,
        check=False,
    )
    assert "authorization" not in server.requests[0].headers


def test_history_that_is_not_a_regular_file(server: StandIn) -> None:
    result = ask(server, "-H", "/dev/null", "hi")
    assert result.returncode == 2
    assert "not a regular file" in one_error(result)
    assert server.requests == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("args", [["ask", "hi"], ["models"], ["--help"], ["ask", "--dry-run", "hi"]])
def test_full_disk_on_stdout_is_one_line(server: StandIn, args: list[str]) -> None:
    if args[0] == "ask":
        args = ["ask", "--base-url", server.base_url, *args[1:]]
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [*KOALA, *args], stdout=full, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=WAIT, check=False
        )
    assert result.returncode == 1
    assert "No space left on device" in one_error(result)


def test_closed_stdout_is_one_line(server: StandIn) -> None:
    result = subprocess.run(
        ["bash", "-c", '"$@" >&-', "-", *KOALA, "ask", "--base-url", server.base_url, "hi"],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 1
    assert "standard output is closed" in one_error(result)


def test_closed_stderr_keeps_the_exit_status(server: StandIn) -> None:
    server.push(Script([b"no"], status=500, reason="Internal Server Error"))
    result = subprocess.run(
        ["bash", "-c", '"$@" 2>&-', "-", *KOALA, "ask", "--base-url", server.base_url, "--retries", "0", "hi"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 4


def test_ignored_sigint_stays_ignored(server: StandIn) -> None:
    # A background job of a script starts with SIGINT ignored; koala must not take it back.
    gate = threading.Event()
    server.push(Script([sse("early"), gate, sse(" late")]))
    proc = subprocess.Popen(
        [*KOALA, "ask", "--base-url", server.base_url, "hi"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=quiet_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert proc.stdout is not None
        assert read_exactly(proc.stdout.fileno(), 5) == b"early"
        proc.send_signal(signal.SIGINT)
        gate.set()
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert out == b" late\n"


def test_piped_chat_refuses_a_line_that_is_not_utf8(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    result = run_koala("chat", "--base-url", server.base_url, "-H", str(path), stdin=b"caf\xe9\n")
    assert result.returncode == 2
    assert "line 1 is not valid UTF-8" in one_error(result)
    assert server.requests == []
    assert not path.exists()


def test_piped_chat_sigint_while_waiting_for_input(server: StandIn) -> None:
    proc = subprocess.Popen(
        [*KOALA, "chat", "--base-url", server.base_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=quiet_env(),
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"hi\n")
        proc.stdin.flush()
        assert read_exactly(proc.stdout.fileno(), len(b"Hello, world\n")) == b"Hello, world\n"
        proc.send_signal(signal.SIGINT)  # now blocked reading the next line
        _, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert b"Traceback" not in err


def test_batch_bad_lines_keep_their_place_and_id() -> None:
    data = b'{"id": "a", "prompt": "x"}\n\xff\n{"id": "e", "prompt": ""}\n{"id": "a", "prompt": "again"}\n'
    jobs = list(parse_jobs(data, "in"))
    assert isinstance(jobs[0], Job)
    assert isinstance(jobs[1], BadJob) and "in:2: not valid UTF-8" in jobs[1].message
    assert isinstance(jobs[2], BadJob) and jobs[2].id == "e"
    assert isinstance(jobs[3], BadJob) and "more than once" in jobs[3].message


def test_batch_line_not_utf8_does_not_stop_the_others(server: StandIn) -> None:
    result = run_koala("batch", "--lines", "--base-url", server.base_url, stdin=b"ok\n\xff\nfine\n")
    assert result.returncode == 2
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["ok"] for r in records] == [True, False, True]
    assert records[1]["line"] == 2


def test_batch_resume_with_line_separators_in_the_text(server: StandIn, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "a", "ok": True, "text": "x\u2028y\x85z"}, ensure_ascii=False) + "\n")
    result = run_koala(
        "batch", "--resume", str(out), "--base-url", server.base_url, stdin=b'{"id": "a", "prompt": "x"}\n'
    )
    assert result.returncode == 0
    assert result.stdout == b""
    assert server.requests == []


def test_dry_run_with_a_lone_surrogate_in_history(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_bytes(b'{"role": "user", "content": "a\\ud800"}\n{"role": "assistant", "content": "b"}\n')
    for extra in ([], ["--json"]):
        result = run_koala("ask", "--dry-run", *extra, "-H", str(path), "hi")
        assert result.returncode == 0, result.stderr
        assert b"\\ud800" in result.stdout
