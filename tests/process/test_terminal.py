"""koala on a pseudo-terminal: `koala chat` interactive, inert escape sequences on a terminal
stdout, the batch progress line on a terminal stderr, no waiting for typing on a terminal stdin.

`koala chat` runs on the slave side of a pty as its controlling terminal (so Ctrl-C written to
the master becomes a SIGINT); the test reads the master with select and bounded timeouts and
waits for expected output, never for time to pass.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    HISTORY,
    HOSTILE,
    KOALA,
    MARKERS,
    WAIT,
    assert_inert,
    ndjson,
    one_line_error,
    popen_koala,
    read_jsonl,
    read_terminal,
    stderr_on_a_terminal,
    write_jsonl,
)
from standin import Script, StandIn, sse


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
        proc = popen_koala("ask", *args, stdout=slave)
    finally:
        os.close(slave)
    try:
        out = read_terminal(master)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=WAIT)
    return proc.returncode, out, err


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


def test_batch_progress_line_goes_to_a_terminal_stderr(server: StandIn) -> None:
    status, out, seen = stderr_on_a_terminal(
        ["batch", "--base-url", server.base_url, "--retries", "0", "--lines"], stdin=b"a\nb\n"
    )
    assert status == 0
    assert len(ndjson(out)) == 2  # stdout stays pure NDJSON
    assert b"2 done, 0 failed" in seen


def test_batch_without_input_on_a_terminal_is_a_usage_error(server: StandIn) -> None:
    master, slave = os.openpty()
    try:
        result = subprocess.run(
            [*KOALA, "batch", "--base-url", server.base_url],
            stdin=slave,
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert result.returncode == 2
    assert result.stdout == b""
    assert "no input" in one_line_error(result)


_SPAWN = "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execvp(sys.argv[1], sys.argv[1:])"


PROMPT = b"> "


class Terminal:
    """`koala chat` on a pseudo-terminal: what it writes is read from the master side."""

    def __init__(self, *args: str) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
        env = {**os.environ, "TERM": "dumb", "INPUTRC": os.devnull}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _SPAWN, *KOALA, "chat", *args],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                env=env,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master
        self.seen = b""  # everything read so far
        self.pos = 0  # where the next expect() starts looking
        self.eof = False

    def _fill(self, deadline: float) -> bool:
        """Read what is there (waiting at most until ``deadline``); False at end of output."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        ready, _, _ = select.select([self.master], [], [], remaining)
        if ready:
            try:
                piece = os.read(self.master, 65536)
            except OSError:  # EIO: the process closed the terminal
                piece = b""
            if not piece:
                self.eof = True
                return False
            self.seen += piece
        return True

    def expect(self, needle: bytes, timeout: float = WAIT) -> bytes:
        """Wait for ``needle``; return the output from the last match up to and including it."""
        deadline = time.monotonic() + timeout
        while needle not in self.seen[self.pos :]:
            if not self._fill(deadline) or time.monotonic() >= deadline:
                if needle in self.seen[self.pos :]:
                    break
                raise AssertionError(f"no {needle!r} on the terminal; after the last match: {self.seen[self.pos :]!r}")
        end = self.seen.index(needle, self.pos) + len(needle)
        chunk, self.pos = self.seen[self.pos : end], end
        return chunk

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def line(self, text: str) -> bytes:
        """Type a line and return what appeared up to the next prompt."""
        self.send(text.encode() + b"\r")
        return self.expect(PROMPT)

    def finish(self, timeout: float = WAIT) -> int:
        """Read to the end of the output and return the exit status."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline) and time.monotonic() < deadline:
            pass
        return self.proc.wait(max(deadline - time.monotonic(), 0.1))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        os.close(self.master)


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    started: list[Terminal] = []
    try:
        yield started
    finally:
        for terminal in started:
            terminal.close()


def chat_on_terminal(terminals: list[Terminal], server: StandIn, *args: str) -> Terminal:
    terminal = Terminal("--base-url", server.base_url, "--retries", "0", *args)
    terminals.append(terminal)
    terminal.expect(PROMPT)
    return terminal


PRIOR = HISTORY[1:3]  # a turn, without a system line


def test_interactive_turns_extend_the_history(server: StandIn, terminals: list[Terminal], tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", PRIOR)
    server.push(Script([sse("Nice ", "to meet you")]), Script([sse("You are Ann.\n")]))
    terminal = chat_on_terminal(terminals, server, "-H", str(path))
    assert b"gpt-4o-mini" in terminal.seen  # the greeting names the model
    assert b"Nice to meet you\r\n" in terminal.line("hello")
    assert b"You are Ann.\r\n" in terminal.line("who am I?")
    terminal.send(b"\x04")  # Ctrl-D at an empty prompt
    assert terminal.finish() == 0
    first, second = (r.json() for r in server.requests)
    assert first == {
        "input": "hello",
        "inputHistory": ["my name is Ann"],
        "outputHistory": ["Hello Ann"],
        "model": "gpt-4o-mini",
    }
    assert second["input"] == "who am I?"
    assert second["inputHistory"] == ["my name is Ann", "hello"]
    assert second["outputHistory"] == ["Hello Ann", "Nice to meet you"]
    assert read_jsonl(path) == [
        *PRIOR,
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Nice to meet you"},
        {"role": "user", "content": "who am I?"},
        {"role": "assistant", "content": "You are Ann.\n"},
    ]


def test_ctrl_c_stops_the_reply_and_the_turn_is_not_saved(
    server: StandIn, terminals: list[Terminal], tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", PRIOR)
    before = path.read_bytes()
    gate = threading.Event()
    server.push(Script([sse("partial"), gate, sse(" rest")]), Script([sse("fine")]))
    try:
        terminal = chat_on_terminal(terminals, server, "-H", str(path))
        terminal.send(b"tell me a long story\r")
        terminal.expect(b"partial")  # streamed while the server still holds the rest back
        terminal.send(b"\x03")
        stopped = terminal.expect(PROMPT)
        assert b"not saved" in stopped
        assert b" rest" not in stopped
        assert path.read_bytes() == before
        assert b"fine" in terminal.line("short one")
        terminal.send(b"/exit\r")
        assert terminal.finish() == 0
    finally:
        gate.set()
    assert b" rest" not in terminal.seen
    second = server.requests[1].json()
    assert second["inputHistory"] == ["my name is Ann"]  # the stopped turn is not part of the conversation
    assert second["outputHistory"] == ["Hello Ann"]
    assert read_jsonl(path) == [
        *PRIOR,
        {"role": "user", "content": "short one"},
        {"role": "assistant", "content": "fine"},
    ]


def test_sigterm_mid_reply_ends_the_chat_with_143(server: StandIn, terminals: list[Terminal], tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", PRIOR)
    before = path.read_bytes()
    gate = threading.Event()
    server.push(Script([sse("partial"), gate, sse(" rest")]))
    try:
        terminal = chat_on_terminal(terminals, server, "-H", str(path))
        terminal.send(b"go\r")
        terminal.expect(b"partial")
        terminal.proc.send_signal(signal.SIGTERM)
        assert terminal.finish() == 143
    finally:
        gate.set()
    assert b"Traceback" not in terminal.seen
    assert path.read_bytes() == before


def test_slash_commands(server: StandIn, terminals: list[Terminal]) -> None:
    server.push(Script([sse("one")]), Script([sse("two")]), Script([sse("three")]))
    terminal = chat_on_terminal(terminals, server)
    shown = terminal.line("/help")
    for name in (b"/help", b"/model", b"/system", b"/history", b"/exit"):
        assert name in shown
    assert b"one" in terminal.line("first")
    assert b"gpt-4o" in terminal.line("/model gpt-4o")
    terminal.line("/system Answer in French.")
    assert b"two" in terminal.line("second")
    terminal.line("/system")  # clears it
    assert b"three" in terminal.line("third")
    history = terminal.line("/history")
    for text in (b"first", b"one", b"second", b"two", b"third", b"three"):
        assert text in history
    assert history.index(b"first") < history.index(b"one") < history.index(b"second") < history.index(b"three")
    assert b"unknown command" in terminal.line("/frobnicate")
    terminal.send(b"/exit\r")
    assert terminal.finish() == 0
    bodies = [r.json() for r in server.requests]
    assert [b["model"] for b in bodies] == ["gpt-4o-mini", "gpt-4o", "gpt-4o"]
    assert [b["input"] for b in bodies] == ["first", "second Answer in French.", "third"]
    assert bodies[2]["inputHistory"] == ["first", "second"]
    assert bodies[2]["outputHistory"] == ["one", "two"]


def test_backslash_continues_the_line(server: StandIn, terminals: list[Terminal], tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    terminal = chat_on_terminal(terminals, server, "-H", str(path))
    terminal.send(b"first line\\\r")
    terminal.expect(b"first line\\")
    terminal.send(b"second line\r")
    assert b"Hello, world" in terminal.expect(PROMPT)
    terminal.send(b"\x04")
    assert terminal.finish() == 0
    assert [r.json()["input"] for r in server.requests] == ["first line\nsecond line"]
    assert read_jsonl(path)[0] == {"role": "user", "content": "first line\nsecond line"}


def test_ctrl_d_at_once_leaves_without_a_request(server: StandIn, terminals: list[Terminal], tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    terminal = chat_on_terminal(terminals, server, "-H", str(path))
    terminal.send(b"\x04")
    assert terminal.finish() == 0
    assert server.requests == []
    assert not path.exists()


def test_reply_control_characters_are_inert_on_the_terminal(server: StandIn, terminals: list[Terminal]) -> None:
    server.push(Script([sse("\x1b]0;pwned\x07red\x1b[31m")]))
    terminal = chat_on_terminal(terminals, server)
    shown = terminal.line("hi")
    assert b"\x1b" not in shown
    assert b"^[]0;pwned^Gred^[[31m" in shown
    terminal.send(b"\x04")
    assert terminal.finish() == 0


def test_failed_turn_keeps_the_chat_going(server: StandIn, terminals: list[Terminal], tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    server.push(Script([b"busy"], status=500, reason="Internal Server Error"), Script([sse("back")]))
    terminal = chat_on_terminal(terminals, server, "-H", str(path))
    failed = terminal.line("first")
    assert b"koala: error:" in failed
    assert b"500" in failed
    assert b"back" in terminal.line("second")
    terminal.send(b"\x04")
    assert terminal.finish() == 0
    assert server.requests[1].json()["inputHistory"] == []
    assert read_jsonl(path) == [{"role": "user", "content": "second"}, {"role": "assistant", "content": "back"}]
