"""Fault injection through the real `koala` command: every failure explicit, tested and harmless.

Each test runs `koala ask` in a subprocess against the loopback stand-in and checks the exit
status, stdout, stderr and the history file's bytes before and after.  Servers that misbehave
are scripted with gates (``threading.Event``), never with sleeps; a few library-level tests
cover what a subprocess cannot reach (a disk that fills up mid-write, the decoder's cap).
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import itertools
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import respx
from conftest import KOALA, read_exactly
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standin import DROP, Notify, Pause, Repeat, Script, StandIn, sse

from koala_cli import Koala, KoalaError
from koala_cli.errors import HistoryError, ProtocolError
from koala_cli.history import append_turns, load_history
from koala_cli.messages import Message
from koala_cli.sse import MAX_EVENT_BYTES, SSEDecoder

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
WAIT = 30.0  # the longest any single koala run may take before the test calls it hung

HISTORY = b'{"role":"user","content":"my name is Ann"}\n{"role":"assistant","content":"Hello Ann"}\n'
# escape sequences and controls between the markers ① to ⑯, which must all survive in order
HOSTILE = "①\x1b]0;pwned\x07②\x1b[2J③\x9b31m④\r⑤\x08⑥\x00⑦\x7f⑧\t⑨\n⑩\u2028⑪\x85⑫\x1bPq\x1b\\⑬\x90⑭\x9d⑮\x1b(0⑯"
MARKERS = "".join(map(chr, range(0x2460, 0x2470)))


# --- helpers -------------------------------------------------------------------------------


def koala(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[bytes]:
    """Run `koala ask ARGS` through pipes (stdin /dev/null unless given)."""
    return subprocess.run(
        [*prefix, *KOALA, "ask", *args],
        input=stdin,
        stdin=None if stdin is not None else DEVNULL,
        capture_output=True,
        timeout=WAIT,
        check=False,
        env=env,
    )


def ask(server: StandIn, *args: str, retries: int = 0, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return koala("--base-url", server.base_url, "--retries", str(retries), *args, **kwargs)  # type: ignore[arg-type]


def error_line(result: subprocess.CompletedProcess[bytes] | bytes, *, debug: bool = False) -> str:
    """The `koala: error:` line that must end stderr; no traceback unless ``debug``."""
    err = (result.stderr if isinstance(result, subprocess.CompletedProcess) else result).decode()
    if not debug:
        assert "Traceback" not in err, err
        assert "Exception ignored" not in err, err
    lines = err.splitlines()
    assert lines, "no error message"
    assert err.endswith("\n"), err
    assert lines[-1].startswith("koala: error: "), err
    return lines[-1]


def only_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    line = error_line(result)
    assert result.stderr.decode().count("\n") == 1, result.stderr
    return line


def notices(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    """stderr lines that are not the final error: the retry notices."""
    return [line for line in result.stderr.decode().splitlines() if not line.startswith("koala: error: ")]


def retry_delay(notice: str) -> float:
    found = re.search(r"retry\w* in (\d+(?:\.\d+)?) ?s", notice)
    assert found, notice
    return float(found.group(1))


def start(*args: str, stdout: int = PIPE, prefix: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*prefix, *KOALA, "ask", *args], stdin=DEVNULL, stdout=stdout, stderr=PIPE)


@contextlib.contextmanager
def running(*args: str, stdout: int = PIPE) -> Iterator[subprocess.Popen[bytes]]:
    """A koala process that is certainly gone when the block ends."""
    proc = start(*args, stdout=stdout)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)


def read_line(fd: int, timeout: float = 20.0, limit: int = 4096) -> bytes:
    """One line from a pipe, read a byte at a time so nothing after it is consumed."""
    line = b""
    while not line.endswith(b"\n") and len(line) < limit:
        piece = read_exactly(fd, 1, timeout)
        if not piece:
            break
        line += piece
    return line


def read_until(fd: int, needle: bytes, timeout: float = 20.0, limit: int = 1 << 16) -> bytes:
    """Read a pipe until ``needle`` has arrived (or end of file, ``timeout``, ``limit`` bytes)."""
    data = b""
    while needle not in data and len(data) < limit:
        piece = read_exactly(fd, 1, timeout)
        if not piece:
            break
        data += piece
    return data


def finish(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    return proc.communicate(timeout=WAIT)


def history(tmp_path: Path, data: bytes = HISTORY) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(data)
    return path


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    assert "503" in only_error_line(result)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [400, 500])
def test_other_statuses_are_not_retried(server: StandIn, status: int) -> None:
    server.push(Script([b"no"], status=status, reason="No", headers={"Content-Type": "text/plain"}))
    result = ask(server, "hi", retries=3)
    assert result.returncode == 4
    assert str(status) in only_error_line(result)
    assert len(server.requests) == 1


def test_refused_connection_is_retried_then_reported() -> None:
    result = koala("--base-url", f"http://127.0.0.1:{closed_port()}", "--retries", "1", "hi")
    assert result.returncode == 3
    assert len(notices(result)) == 1
    message = error_line(result)
    assert "cannot connect" in message
    assert "2 attempts" in message


def test_hangup_before_the_answer_is_retried(server: StandIn) -> None:
    server.push(Script(hangup=True))
    result = ask(server, "hi", retries=1)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Hello, world\n"
    assert len(notices(result)) == 1
    assert len(server.requests) == 2


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
    path = history(tmp_path)
    server.push(Script([sse("part"), DROP], framing="length", length=10_000), Script([sse("again")]))
    result = ask(server, "-H", str(path), "hi", retries=3)
    assert result.returncode == 3
    assert result.stdout == b"part\n"  # the pipe never sees text twice
    assert "dropped" in only_error_line(result)
    assert len(server.requests) == 1
    assert path.read_bytes() == HISTORY


def test_reply_stalled_midway_is_not_retried(server: StandIn) -> None:
    gate = threading.Event()
    server.push(Script([sse("part"), gate]), Script([sse("again")]))
    try:
        result = ask(server, "--timeout", "0.3", "hi", retries=3)
    finally:
        gate.set()
    assert result.returncode == 3
    assert result.stdout == b"part\n"
    only_error_line(result)
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


@pytest.mark.parametrize("value", ["3600", "date"])
def test_retry_after_is_capped_at_30_s_and_interruptible(server: StandIn, value: str) -> None:
    if value == "date":
        value = email.utils.formatdate(time.time() + 3600, usegmt=True)
    server.push(Script([b""], status=503, reason="Service Unavailable", headers={"Retry-After": value}))
    with running("--base-url", server.base_url, "--retries", "1", "--json", "hi") as proc:
        assert proc.stderr is not None
        notice = read_line(proc.stderr.fileno()).decode()
        assert retry_delay(notice) == 30.0, notice
        proc.send_signal(signal.SIGINT)  # while it waits: no 30 s test
        out, err = finish(proc)
    assert proc.returncode == 130
    assert json.loads(out.splitlines()[-1])["exit_status"] == 130
    assert b"Traceback" not in err
    assert len(server.requests) == 1


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
            probe.settimeout(0.3)
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
    assert "timed out connecting" in only_error_line(result)
    assert elapsed < 10


def test_stalled_stream_ends_within_the_timeout(server: StandIn, tmp_path: Path) -> None:
    path = history(tmp_path)
    gate = threading.Event()
    server.push(Script([sse("first"), gate, sse(" never")]))
    try:
        with running(
            "--base-url", server.base_url, "--retries", "0", "--timeout", "0.5", "-H", str(path), "hi"
        ) as proc:
            assert proc.stdout is not None
            assert read_exactly(proc.stdout.fileno(), 5) == b"first"
            stalled = time.monotonic()
            out, err = finish(proc)
            waited = time.monotonic() - stalled
    finally:
        gate.set()
    assert proc.returncode == 3
    assert out == b"\n"
    assert "no data" in error_line(err)
    assert 0.4 <= waited < 5  # cut after the timeout, not before, and not much later
    assert path.read_bytes() == HISTORY


def test_slow_but_live_stream_is_never_cut(server: StandIn, tmp_path: Path) -> None:
    path = history(tmp_path)
    parts: list[object] = []
    for n in range(6):  # 6 x 0.2 s = 1.2 s in all, longer than --timeout 1
        parts += [Pause(0.2), sse(f"{n}")]
    server.push(Script(parts))
    started = time.monotonic()
    result = ask(server, "--timeout", "1", "-H", str(path), "hi")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started > 1.0
    assert result.stdout == b"012345\n"
    assert result.stderr == b""
    assert path.read_bytes().startswith(HISTORY)
    assert len(path.read_bytes().splitlines()) == 4


def test_max_time_bounds_a_live_stream(server: StandIn, tmp_path: Path) -> None:
    path = history(tmp_path)
    parts: list[object] = [sse("start ")]
    for _ in range(100):  # 10 s in all
        parts += [Pause(0.1), sse("more ")]
    server.push(Script(parts))
    started = time.monotonic()
    result = ask(server, "--timeout", "1", "--max-time", "0.5", "-H", str(path), "hi")
    assert result.returncode == 3
    assert time.monotonic() - started < 8
    assert result.stdout.startswith(b"start ")
    assert result.stdout.count(b"more ") < 100
    assert "--max-time" in only_error_line(result)
    assert path.read_bytes() == HISTORY


def test_max_time_bounds_retry_waits(server: StandIn) -> None:
    server.push(Script([b""], status=503, reason="Service Unavailable", headers={"Retry-After": "20"}))
    started = time.monotonic()
    result = ask(server, "--max-time", "0.5", "hi", retries=2)
    assert result.returncode == 3
    assert time.monotonic() - started < 10  # not the 20 s the server asked for
    assert "--max-time" in error_line(result)


# --- signals and a closed stdout -------------------------------------------------------------


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_reply_keeps_what_arrived(server: StandIn, tmp_path: Path, signum: int, status: int) -> None:
    path = history(tmp_path)
    gate = threading.Event()
    server.push(Script([sse("partial"), gate, sse(" rest")]))
    try:
        with running("--base-url", server.base_url, "--retries", "0", "-H", str(path), "hi") as proc:
            assert proc.stdout is not None
            assert read_exactly(proc.stdout.fileno(), 7) == b"partial"
            proc.send_signal(signum)
            out, err = finish(proc)
    finally:
        gate.set()
    assert proc.returncode == status
    assert out == b"\n"  # the cut-off line is ended, nothing more
    assert err.count(b"\n") == 1
    assert b"Traceback" not in err
    assert signal.Signals(signum).name.encode() in err
    assert path.read_bytes() == HISTORY


def test_signal_before_the_answer(server: StandIn, tmp_path: Path) -> None:
    signum, status = signal.SIGINT, 130
    path = history(tmp_path)
    arrived, gate = threading.Event(), threading.Event()
    server.push(Script(before=[Notify(arrived), gate]))
    try:
        with running("--base-url", server.base_url, "--retries", "0", "--json", "-H", str(path), "hi") as proc:
            assert arrived.wait(20)
            proc.send_signal(signum)
            out, err = finish(proc)
    finally:
        gate.set()
    assert proc.returncode == status
    records = [json.loads(line) for line in out.splitlines()]
    assert records[-1]["type"] == "error"
    assert records[-1]["exit_status"] == status
    assert [r["type"] for r in records[:-1]] in ([], ["start"])
    assert b"Traceback" not in err
    assert err.count(b"\n") == 1
    assert path.read_bytes() == HISTORY


@pytest.mark.parametrize("json_flag", [False, True])
def test_closed_stdout_mid_reply_is_quiet(server: StandIn, tmp_path: Path, json_flag: bool) -> None:
    path = history(tmp_path)
    gate = threading.Event()
    server.push(Script([sse("first"), gate, sse(" second" * 500), sse(" third")]))
    args = ["--base-url", server.base_url, "--retries", "0", "-H", str(path)] + (["--json"] if json_flag else [])
    try:
        with running(*args, "hi") as proc:
            assert proc.stdout is not None and proc.stderr is not None
            assert b"first" in read_until(proc.stdout.fileno(), b"first")  # it is mid-reply
            proc.stdout.close()  # like `| head -c 5`
            gate.set()
            proc.wait(WAIT)
            err = proc.stderr.read()
    finally:
        gate.set()
    assert err == b""  # no traceback, no "Exception ignored"
    assert proc.returncode == 141
    assert path.read_bytes() == HISTORY


def test_closed_stdout_before_any_output(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    arrived, gate = threading.Event(), threading.Event()
    server.push(Script(before=[Notify(arrived), gate], parts=[sse("reply")]))
    try:
        with running("--base-url", server.base_url, "--retries", "0", "-H", str(path), "hi") as proc:
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            assert arrived.wait(20)
            gate.set()
            proc.wait(WAIT)
            err = proc.stderr.read()
    finally:
        gate.set()
    assert err == b""
    assert proc.returncode == 141
    assert not path.exists()


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
    path = history(tmp_path, before)
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
    path = history(tmp_path, data)
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 2
    message = only_error_line(result)
    assert message.startswith(f"koala: error: {path}:{line}: "), message
    assert why in message
    assert result.stdout == b""
    assert path.read_bytes() == data
    assert server.requests == []


def test_malformed_history_with_json_output(server: StandIn, tmp_path: Path) -> None:
    path = history(tmp_path, USER + b"\n{oops\n")
    result = ask(server, "--json", "-H", str(path), "hi")
    assert result.returncode == 2
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["type"] == "error"
    assert last["exit_status"] == 2
    assert f"{path}:2:" in last["message"]


def test_history_that_is_a_directory(server: StandIn, tmp_path: Path) -> None:
    result = ask(server, "-H", str(tmp_path), "hi")
    assert result.returncode == 2
    assert str(tmp_path) in only_error_line(result)
    assert server.requests == []


def test_history_in_a_missing_directory(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "chat.jsonl"
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 2
    message = only_error_line(result)
    assert str(path) in message
    assert "does not exist" in message
    assert server.requests == []
    assert not path.parent.exists()


def binding_permissions(path: Path, mode: int) -> tuple[str, ...]:
    """A command prefix under which ``path``'s mode bits (set here) bind, even for root.

    Root bypasses permission bits through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH; dropping
    them (inheritable and bounding sets) keeps the uid, so the interpreter under /root stays
    readable while a chmod 000 file does not.  Skips when no such prefix can be had.
    """
    path.chmod(mode)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file permissions cannot be made to bind")
        caps = "-dac_override,-dac_read_search"
        prefix = (setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}")
    wanted = (os.R_OK if not mode & 0o400 else 0) | (os.W_OK if not mode & 0o200 else 0)
    check = "import os, sys; sys.exit(os.access(sys.argv[1], int(sys.argv[2])))"
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", check, str(path), str(wanted)],
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    if probe.returncode != 0:
        path.chmod(0o600)
        pytest.skip(f"file permissions do not bind here: {probe.stderr.decode().strip() or 'access granted'}")
    return prefix


def test_unreadable_history(server: StandIn, tmp_path: Path) -> None:
    path = history(tmp_path)
    prefix = binding_permissions(path, 0)
    try:
        result = koala("--base-url", server.base_url, "--retries", "0", "-H", str(path), "hi", prefix=prefix)
    finally:
        path.chmod(0o600)
    assert result.returncode == 2
    message = only_error_line(result)
    assert str(path) in message
    assert re.search("permission denied|not readable", message, re.IGNORECASE), message
    assert server.requests == []
    assert path.read_bytes() == HISTORY


def test_unwritable_history_fails_before_asking(server: StandIn, tmp_path: Path) -> None:
    path = history(tmp_path)
    prefix = binding_permissions(path, 0o400)
    try:
        result = koala("--base-url", server.base_url, "--retries", "0", "-H", str(path), "hi", prefix=prefix)
    finally:
        path.chmod(0o600)
    assert result.returncode == 2
    assert str(path) in only_error_line(result)
    assert server.requests == []  # refused before the question was spent
    assert path.read_bytes() == HISTORY


@pytest.mark.parametrize(
    ("before", "room"),
    [(HISTORY, 10), (HISTORY[:-1], 30)],
    ids=["partial", "no-eol-partial"],
)
def test_disk_full_while_appending_end_to_end(server: StandIn, tmp_path: Path, before: bytes, room: int) -> None:
    """RLIMIT_FSIZE (SIGXFSZ ignored, as Python does) makes the append's write stop short, then fail."""
    path = history(tmp_path, before)
    limit = len(before) + room
    wrapper = (
        sys.executable,
        "-c",
        "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); os.execv(sys.argv[1], sys.argv[1:])",
    )
    server.push(Script([sse("a reply long enough to need more room than there is")]))
    result = koala("--base-url", server.base_url, "--retries", "0", "-H", str(path), "hi", prefix=wrapper)
    assert result.returncode != 0
    message = only_error_line(result)
    assert str(path) in message
    assert path.read_bytes() == before  # cut back to its exact earlier length


class _DiskFills:
    """``os.write`` that writes ``room`` bytes in all, then fails with ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.real = os.write

    def __call__(self, fd: int, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self.real(fd, bytes(data)[: self.room])
        self.room -= written
        return written


@pytest.mark.parametrize("room", [0, 1, 7, 40])
@pytest.mark.parametrize("before", [HISTORY, HISTORY[:-1], b""], ids=["terminated", "unterminated", "empty"])
def test_disk_full_leaves_the_file_at_its_earlier_length(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, before: bytes, room: int
) -> None:
    path = history(tmp_path, before)
    monkeypatch.setattr(os, "write", _DiskFills(room))
    with pytest.raises(HistoryError) as caught:
        append_turns(path, "question", "an answer that does not fit")
    monkeypatch.undo()
    assert str(path) in str(caught.value)
    assert "No space left" in str(caught.value)
    assert path.read_bytes() == before


def test_failing_fsync_leaves_the_file_at_its_earlier_length(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = history(tmp_path)

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(HistoryError):
        append_turns(path, "question", "answer")
    monkeypatch.undo()
    assert path.read_bytes() == HISTORY


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
    result = subprocess.run(
        [*KOALA, "ask", "--base-url", server.base_url, "--retries", "0", *option, b"caf\xe9", "ok"],
        stdin=DEVNULL,
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 2
    assert "UTF-8" in only_error_line(result)
    assert server.requests == []


# --- hostile replies -------------------------------------------------------------------------


def run_on_terminal(*args: str) -> tuple[int, bytes, bytes]:
    """Run koala with a pty (raw mode, so the bytes are exactly what koala wrote) as stdout."""
    pty = pytest.importorskip("pty")
    tty = pytest.importorskip("tty")
    try:
        master, slave = pty.openpty()
    except OSError as exc:
        pytest.skip(f"no pty: {exc}")
    try:
        tty.setraw(slave)
        proc = start(*args, stdout=slave)
    finally:
        os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and len(out) < 1 << 20:
            if not select.select([master], [], [], deadline - time.monotonic())[0]:
                break
            try:
                piece = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not piece:
                break
            out += piece
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=WAIT)
    return proc.returncode, out, err


def assert_inert(out: bytes) -> str:
    text = out.decode("utf-8")
    for char in text:
        code = ord(char)
        assert not (code < 0x20 and char not in "\n\t"), f"C0 control {code:#x} in {text!r}"
        assert not (0x7F <= code < 0xA0), f"DEL/C1 control {code:#x} in {text!r}"
    return text


def test_terminal_output_is_neutralised(server: StandIn) -> None:
    # the escape sequences are split over events too, as a stream may deliver them
    server.push(Script([sse(HOSTILE[:2], HOSTILE[2:9], HOSTILE[9:])]))
    status, out, err = run_on_terminal("--base-url", server.base_url, "--retries", "0", "hi")
    assert status == 0, err
    text = assert_inert(out)
    assert "pwned" in text and "[2J" in text  # shown, not hidden
    assert "".join(c for c in text if c in MARKERS) == MARKERS
    assert text.endswith("\n")


def test_terminal_json_output_is_neutralised(server: StandIn) -> None:
    server.push(Script([sse(HOSTILE)]))
    status, out, err = run_on_terminal("--base-url", server.base_url, "--retries", "0", "--json", "hi")
    assert status == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert records[1] == {"type": "chunk", "text": HOSTILE}
    assert_inert(out)


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
ENDLESS = 1 << 16  # 4 GiB of flood: a client that does not stop reading is killed by the run's timeout


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
    message = only_error_line(result)
    assert len(message) < 1000
    assert needle in message
    if status == 5 and not needle:
        assert re.search(r"larger|longer|too (big|large|long)|exceed", message), message
        assert str(MAX_EVENT_BYTES) in message or "MiB" in message or "MB" in message
    assert result.stdout == b""


def test_oversized_event_after_good_chunks(server: StandIn, tmp_path: Path) -> None:
    path = history(tmp_path)
    server.push(Script([sse("kept"), b'data: "', Repeat(b"x" * FLOOD, ENDLESS)]))
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 5
    assert result.stdout == b"kept\n"
    only_error_line(result)
    assert path.read_bytes() == HISTORY


def test_decoder_caps_an_event_of_empty_data_lines() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    with pytest.raises(ProtocolError):
        for _ in range(100):  # 100 x 100 lines: ten times the cap once the newlines that join them count
            decoder.feed(b"data:\n" * 100)


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
    path = history(tmp_path)
    server.push(script)
    result = ask(server, "-H", str(path), "hi", retries=2)
    assert result.returncode == status
    message = only_error_line(result)
    assert needle in message
    assert "<html" not in message.lower() and "<!doctype" not in message.lower()
    assert result.stdout == b""
    assert path.read_bytes() == HISTORY
    assert len(server.requests) == 1  # 403, 2xx answers and malformed events are not retried


@pytest.mark.parametrize(
    ("script", "needle"),
    [
        pytest.param(Script([b"<html><title>Oops</title></html>"], headers={}), "HTML", id="html-no-type"),
        pytest.param(Script([b'{"error":"rate limited"}']), "rate limited", id="json-as-event-stream"),
    ],
)
def test_body_without_events_is_named(server: StandIn, tmp_path: Path, script: Script, needle: str) -> None:
    path = history(tmp_path)
    server.push(script)
    result = ask(server, "-H", str(path), "hi")
    assert result.returncode == 5
    assert needle in only_error_line(result)
    assert path.read_bytes() == HISTORY


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
    env = {**os.environ, "KOALA_API_KEY": KEY}
    result = koala("--base-url", server.base_url, "--retries", "0", "--json", "hi", env=env)
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
    env = {**os.environ, "KOALA_API_KEY": KEY}
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
    assert "401" in only_error_line(result)
    assert KEY.encode() not in result.stdout + result.stderr


@pytest.mark.parametrize("key", [KEY + "\nX", KEY + "é"], ids=["newline", "non-ascii"])
def test_unusable_api_key_is_a_usage_error(server: StandIn, key: str) -> None:
    result = ask(server, "--api-key", key, "hi")
    assert result.returncode == 2
    only_error_line(result)
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
    env = {k: v for k, v in os.environ.items() if k != "NO_PROXY"}
    env |= {"HTTP_PROXY": f"http://user:secret@127.0.0.1:{port}", "ALL_PROXY": f"http://u:secret@127.0.0.1:{port}"}
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
        assert refused.returncode == 4
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
    only_error_line(result)
    assert b"secret" not in result.stderr


@pytest.mark.parametrize("option", ["--proxy", "--base-url"])
def test_port_out_of_range_is_a_usage_error(server: StandIn, option: str) -> None:
    url = "http://user:secret@127.0.0.1:99999" if option == "--proxy" else "http://127.0.0.1:99999"
    args = ["--proxy", url, "--base-url", server.base_url] if option == "--proxy" else ["--base-url", url]
    result = koala(*args, "--retries", "0", "hi")
    assert result.returncode == 2
    only_error_line(result)
    assert b"secret" not in result.stderr


# --- arbitrary answers through the provider --------------------------------------------------

URL = "https://koala.sh/api/gpt/"
HELLO: list[Message] = [{"role": "user", "content": "hi"}]


class _Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


def _answer(draw: st.DrawFn) -> tuple[int, dict[str, str], list[bytes]]:
    body = draw(
        st.one_of(
            st.binary(max_size=300),
            st.lists(
                st.sampled_from(
                    [b"data: ", b'"x"', b"\n", b"\r", b"\r\n", b"[DONE]", b"{", b"}", b'"text":', b":", b"\xff", b"\\u"]
                ),
                max_size=40,
            ).map(b"".join),
        )
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
    bounds = [0, *cuts, len(body)]
    pieces = [body[a:b] for a, b in itertools.pairwise(bounds)]
    status = draw(st.sampled_from([200, 200, 200, 201, 204, 403, 404, 429, 500, 503]))
    headers: dict[str, str] = {}
    content_type = draw(
        st.sampled_from([None, "text/event-stream", "application/json", "text/html", "text/plain", "x/y; charset=zz"])
    )
    if content_type:
        headers["Content-Type"] = content_type
    encoding = draw(st.sampled_from([None, None, "gzip", "deflate", "identity"]))
    if encoding:
        headers["Content-Encoding"] = encoding
    if draw(st.booleans()):
        headers["cf-ray"] = "1"
    return status, headers, pieces


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.composite(_answer)())
def test_arbitrary_answers_give_chunks_or_a_koala_error(answer: tuple[int, dict[str, str], list[bytes]]) -> None:
    status, headers, pieces = answer

    async def main() -> list[str] | KoalaError:
        with respx.mock(assert_all_called=False) as router:
            router.post(URL).mock(return_value=httpx.Response(status, headers=headers, stream=_Pieces(pieces)))
            chunks: list[str] = []
            try:
                async for chunk in Koala.create_async_generator("gpt-4o-mini", HELLO, retries=0, timeout=5):
                    chunks.append(chunk)
            except KoalaError as exc:
                return exc
            return chunks

    result = anyio.run(main)
    if isinstance(result, KoalaError):
        assert result.exit_status in (3, 4, 5), repr(result)
        assert "\n" not in str(result)
    else:
        assert 200 <= status < 300
        assert all(isinstance(chunk, str) and chunk for chunk in result)
