"""Exit status and history always agree: a turn is in the history if and only if koala exits 0.

Scripts retry on failure, so a failed run that saved its turn would save it twice.  Each
case makes the very last output fail -- the final newline or the NDJSON done record, into a
full disk (RLIMIT_FSIZE) or a pipe whose reader has gone -- or names a history that cannot
be created, and checks the exit status against the file's bytes.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import KOALA, PRIOR, WAIT, read_exactly, run_koala
from standin import Script, StandIn, sse

PIPE = subprocess.PIPE
START = b'{"type":"start","model":"gpt-4o-mini"}\n'


def chunk_record(text: str) -> bytes:
    return json.dumps({"type": "chunk", "text": text}, separators=(",", ":")).encode() + b"\n"


def limited(size: int) -> None:
    """In the child: files may grow to ``size`` bytes; past it a write fails with EFBIG."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


@pytest.mark.parametrize("json_flag", [False, True], ids=["raw", "json"])
def test_last_output_on_a_full_disk_saves_no_turn(server: StandIn, tmp_path: Path, json_flag: bool) -> None:
    """Everything but the final newline (or the done record) fits: exit 1, and no turn."""
    path = tmp_path / "chat.jsonl"
    path.write_bytes(PRIOR)
    server.push(Script([sse("Hello", done=True)]))
    fits = len(START + chunk_record("Hello")) if json_flag else len(b"Hello")
    out_path = tmp_path / "out"
    # the history is written by the same process: leave it room (the limit is per file size)
    room = max(fits, len(PRIOR) + 200)
    args = [*KOALA, "ask", "--retries", "0", "--base-url", server.base_url, "-H", str(path), "hi"]
    args += ["--json"] if json_flag else []
    with out_path.open("wb") as out:
        # stdout is a file already `fits` bytes short of the limit's end: pad it first
        pad = room - fits
        out.write(b"." * pad)
        out.flush()
        result = subprocess.run(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=PIPE, timeout=WAIT, preexec_fn=lambda: limited(room)
        )
    written = out_path.read_bytes()[room - fits :]
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(b"koala: error: cannot write the output") and result.stderr.count(b"\n") == 1
    assert written == (START + chunk_record("Hello") if json_flag else b"Hello")
    assert path.read_bytes() == PRIOR  # exit 1: the turn is not in the history


@pytest.mark.parametrize("json_flag", [False, True], ids=["raw", "json"])
def test_last_output_to_a_gone_reader_saves_no_turn(server: StandIn, tmp_path: Path, json_flag: bool) -> None:
    """The reader reads the reply, then leaves before the final newline (or done record)."""
    path = tmp_path / "chat.jsonl"
    path.write_bytes(PRIOR)
    gate = threading.Event()
    server.push(Script([sse("Hello"), gate, b"data: [DONE]\n\n"]))
    args = [*KOALA, "ask", "--retries", "0", "--base-url", server.base_url, "-H", str(path), "hi"]
    args += ["--json"] if json_flag else []
    expected = START + chunk_record("Hello") if json_flag else b"Hello"
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=PIPE, stderr=PIPE)
    try:
        assert proc.stdout is not None
        assert read_exactly(proc.stdout.fileno(), len(expected)) == expected
        proc.stdout.close()  # the reader is gone before koala writes its last line
        gate.set()
        assert proc.stderr is not None
        err = proc.stderr.read()  # koala closes stderr at exit; bounded by the wait below
        proc.wait(timeout=WAIT)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 141, err
    assert err == b""
    assert path.read_bytes() == PRIOR  # exit 141: the turn is not in the history


# --- piped chat: each line is one message ------------------------------------------------------


@pytest.mark.parametrize(
    ("stdin", "messages"),
    [
        (b"one\\\ntwo\\", ["one\\", "two\\"]),  # the last line ends in a backslash and has no newline
        (b"one\\\ntwo\n", ["one\\", "two"]),
        (b"a\\\n\\\nb\\\n", ["a\\", "\\", "b\\"]),
    ],
    ids=["last-line-backslash", "backslash-then-line", "backslashes-only"],
)
def test_piped_chat_sends_each_line_as_it_is(
    server: StandIn, tmp_path: Path, stdin: bytes, messages: list[str]
) -> None:
    path = tmp_path / "chat.jsonl"
    result = run_koala("chat", "--base-url", server.base_url, "-H", str(path), stdin=stdin)
    assert result.returncode == 0, result.stderr
    sent = [request.json()["input"] for request in server.requests]
    assert sent == messages
    saved = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [m["content"] for m in saved if m["role"] == "user"] == messages
    assert result.stdout == b"Hello, world\n" * len(messages)
