"""A loopback stand-in for koala.sh that streams fast enough never to be the bottleneck (stdlib only).

It answers ``POST .../api/gpt/`` with ``text/event-stream`` events ``data: "<json string>"\\n\\n``
(``--openai``: ``POST .../v1/chat/completions`` with ``data: {"choices":[{"delta":{"content":…}}]}``
events and a last one with ``"finish_reason":"stop"``), optionally ending with ``data: [DONE]``,
built once before the first request, in one of three modes:

``bulk``
    the whole body handed to the kernel in writes of ``write_size`` bytes (event boundaries
    fall anywhere), so the client reads as fast as it can;
``events``
    one event per TCP write (``TCP_NODELAY``), optionally ``interval`` seconds apart;
``first-pause``
    the headers, ``lead`` seconds of silence, the first event alone, ``pause`` seconds of
    silence, then the rest -- for measuring how fast one event reaches the reader's pipe.

Each connection is served by its own thread with blocking sockets (the project bans
``asyncio``; a thread with a pre-built body costs less CPU than any event loop).  The server
stops after ``lifetime`` seconds, after ``max_requests`` answers, on SIGTERM/SIGINT, or, when
run as a script with ``--stop-on-eof``, as soon as its standard input closes (so it never
outlives its runner).

    python bench/server.py --chunks 100000 --size 16 --mode bulk   # prints its base URL
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MODES", "StreamConfig", "StreamServer", "expected_text", "make_chunks"]

MODES = ("bulk", "events", "first-pause")
FRAMINGS = ("chunked", "length", "close")
SOCKET_TIMEOUT = 30.0  # no send or receive waits longer than this
MAX_REQUEST_BYTES = 256 * 1024 * 1024

# Chat-like text: mostly plain words, some non-ASCII, a few characters JSON must escape
# (newline, quote, backslash, tab) -- the mix a real reply has, so both the fast and the
# escaped paths of a decoder run.
_CORPUS = (
    "Koalas sleep up to twenty hours a day, because eucalyptus leaves give little energy. "
    "They live in the open forests of eastern Australia — from Queensland to Victoria.\n\n"
    "Facts worth knowing:\n"
    "- A joey stays in the pouch for about six months; then it rides on its mother's back.\n"
    '- The name is often said to mean "no water", though that is disputed.\n'
    "- Fingerprints of koalas look almost like ours: naïve café-goers, beware the Ünïcödé 🐨.\n"
    "Path on Windows: C:\\koala\\eucalyptus\tand a tab.\n"
)


def make_chunks(count: int, size: int, *, pool_size: int = 997) -> list[str]:
    """``count`` text chunks of exactly ``size`` UTF-8 bytes each, cut from the corpus.

    A pool of ``pool_size`` distinct chunks is cut from the repeated corpus (never inside a
    character; a chunk that a wide character would overflow is padded with ``.``) and
    repeated, so a million chunks cost no more to make than a thousand.
    """
    if size < 1:
        raise ValueError("chunk size must be at least 1 byte")
    pool: list[str] = []
    position = 0
    corpus_length = len(_CORPUS)
    while len(pool) < min(count, pool_size):
        parts: list[str] = []
        used = 0
        while True:
            char = _CORPUS[position % corpus_length]
            width = len(char.encode("utf-8"))
            if used + width > size:
                break
            parts.append(char)
            used += width
            position += 1
        parts.append("." * (size - used))
        pool.append("".join(parts))
    if not pool:
        return []
    repeats, rest = divmod(count, len(pool))
    return pool * repeats + pool[:rest]


def expected_text(chunks: list[str]) -> str:
    """What a consumer should reassemble from the stream."""
    return "".join(chunks)


def _event(text: str, openai: bool = False) -> bytes:
    # ensure_ascii=False: like JSON.stringify on koala.sh, non-ASCII travels as UTF-8.
    if openai:  # as OpenAI's API sends a delta: compact separators, ids and the model left out
        value: object = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        return b"data: " + json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"
    return b"data: " + json.dumps(text, ensure_ascii=False).encode("utf-8") + b"\n\n"


@dataclass(frozen=True)
class StreamConfig:
    """What every answer of one server looks like."""

    chunks: int = 100_000
    size: int = 16
    mode: str = "bulk"
    done: bool = True
    framing: str = "chunked"
    write_size: int = 64 * 1024
    interval: float = 0.0  # events mode: seconds between events
    lead: float = 0.05  # first-pause mode: silence between the headers and the first event
    pause: float = 0.3  # first-pause mode: silence after the first event
    openai: bool = False  # OpenAI chat-completions events at /v1/chat/completions instead of koala.sh's

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if self.framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}")
        if self.chunks < 1 or self.write_size < 1:
            raise ValueError("chunks and write_size must be positive")


class _Body:
    """The pre-built answer: head, then the framed pieces to send one by one."""

    def __init__(self, config: StreamConfig) -> None:
        self.chunks = make_chunks(config.chunks, config.size)
        events = [_event(text, config.openai) for text in self.chunks]
        if config.openai:  # the reply says why it ended, or a client rightly calls it cut off
            events.append(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
        if config.done:
            events.append(b"data: [DONE]\n\n")
        raw = b"".join(events)
        if config.mode == "bulk":
            pieces = [raw[i : i + config.write_size] for i in range(0, len(raw), config.write_size)]
        elif config.mode == "events":
            pieces = events
        else:  # first-pause: the first event alone, then everything else in bulk
            rest = raw[len(events[0]) :]
            pieces = [events[0]] + [rest[i : i + config.write_size] for i in range(0, len(rest), config.write_size)]
        head = [
            "HTTP/1.1 200 OK",
            "Content-Type: text/event-stream; charset=utf-8",
            "Cache-Control: no-cache",
            "Connection: close",
        ]
        if config.framing == "chunked":
            head.append("Transfer-Encoding: chunked")
            pieces = [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces]
            pieces[-1] += b"0\r\n\r\n"
        elif config.framing == "length":
            head.append(f"Content-Length: {len(raw)}")
        self.head = ("\r\n".join(head) + "\r\n\r\n").encode("ascii")
        self.pieces = pieces
        # In bulk mode the kernel gets everything in one call; it splits the writes itself.
        self.blob = self.head + b"".join(pieces) if config.mode == "bulk" else b""


class StreamServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 answering every request with the same stream.

    ``on_first_event(t)`` is called with ``time.perf_counter()`` taken just before the first
    event is written (first-pause mode): the caller's clock, when the server runs in its
    process.
    """

    def __init__(
        self,
        config: StreamConfig,
        *,
        port: int = 0,
        lifetime: float = 600.0,
        max_requests: int = 0,
        on_first_event: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.body = _Body(config)
        self.lifetime = lifetime
        self.max_requests = max_requests
        self.on_first_event = on_first_event
        self.served = 0
        self.request_bytes: list[int] = []  # body size of every request, for sanity checks
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", port), backlog=64)
        self._listener.settimeout(0.2)
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="bench-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> StreamServer:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._acceptor.is_alive():
            self._acceptor.join(5)
        for thread in self._threads:
            thread.join(SOCKET_TIMEOUT)
        self._listener.close()

    def shutdown(self) -> None:
        """Ask the server to stop (from any thread or a signal handler); ``stop`` waits for it."""
        self._stop.set()

    def wait(self) -> None:
        """Block until stopped, the lifetime is over, or ``max_requests`` were answered."""
        self._acceptor.join()

    def __enter__(self) -> StreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        deadline = time.monotonic() + self.lifetime
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.max_requests and self.served >= self.max_requests:
                break
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()
        for thread in self._threads:  # let answers in flight finish (each bounded by the socket timeout)
            thread.join(SOCKET_TIMEOUT)
        self._stop.set()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(SOCKET_TIMEOUT)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            path, size = _read_request(conn)
            with self._lock:
                self.request_bytes.append(size)
            if not path.endswith("/v1/chat/completions" if self.config.openai else "/api/gpt/"):
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            self._answer(conn)
        except (OSError, ValueError) as exc:
            with self._lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self.served += 1
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            conn.close()

    def _answer(self, conn: socket.socket) -> None:
        config, body = self.config, self.body
        if config.mode == "bulk":
            conn.sendall(body.blob)
            return
        conn.sendall(body.head)
        if config.mode == "events":
            for piece in body.pieces:
                conn.sendall(piece)
                if config.interval:
                    self._stop.wait(config.interval)
            return
        self._stop.wait(config.lead)
        first, *rest = body.pieces
        sent_at = time.perf_counter()
        conn.sendall(first)
        if self.on_first_event is not None:
            self.on_first_event(sent_at)
        self._stop.wait(config.pause)
        if rest:
            conn.sendall(b"".join(rest))


def _read_request(conn: socket.socket) -> tuple[str, int]:
    """Read one request to its end; return its path and body size (the body is discarded)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            raise ValueError("connection closed before the request head")
        data += piece
        if len(data) > 1024 * 1024:
            raise ValueError("request head too large")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    if method != "POST":
        raise ValueError(f"unexpected method {method}")
    size = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            size = int(value)
        elif name.strip().lower() == "transfer-encoding":
            raise ValueError("chunked request bodies are not supported")
    if size > MAX_REQUEST_BYTES:
        raise ValueError("request body too large")
    remaining = size - len(body)
    buffer = bytearray(1024 * 1024)
    while remaining > 0:
        got = conn.recv_into(buffer, min(remaining, len(buffer)))
        if not got:
            raise ValueError("connection closed in the request body")
        remaining -= got
    return path, size


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=100_000, help="text chunks per answer")
    parser.add_argument("--size", type=int, default=16, help="UTF-8 bytes per chunk")
    parser.add_argument("--mode", choices=MODES, default="bulk")
    parser.add_argument("--framing", choices=FRAMINGS, default="chunked", help="HTTP body framing")
    parser.add_argument("--no-done", dest="done", action="store_false", help="end without data: [DONE]")
    parser.add_argument("--write-size", type=int, default=64 * 1024, help="bytes per write in bulk mode")
    parser.add_argument("--interval", type=float, default=0.0, help="events mode: seconds between events")
    parser.add_argument("--lead", type=float, default=0.05, help="first-pause mode: seconds before the first event")
    parser.add_argument("--pause", type=float, default=0.3, help="first-pause mode: seconds after the first event")
    parser.add_argument("--openai", action="store_true", help="OpenAI chat-completions events, not koala.sh's")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--lifetime", type=float, default=600.0, help="stop after this many seconds")
    parser.add_argument("--max-requests", type=int, default=0, help="stop after this many answers (0: no limit)")
    parser.add_argument("--stop-on-eof", action="store_true", help="stop when standard input closes (for runners)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    config = StreamConfig(
        chunks=args.chunks,
        size=args.size,
        mode=args.mode,
        done=args.done,
        framing=args.framing,
        write_size=args.write_size,
        interval=args.interval,
        lead=args.lead,
        pause=args.pause,
        openai=args.openai,
    )
    server = StreamServer(config, port=args.port, lifetime=args.lifetime, max_requests=args.max_requests)

    def on_signal(signum: int, frame: object) -> None:
        server.shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def watch_stdin() -> None:  # the runner went away: stop
        # os.read, not sys.stdin: a daemon thread must not hold the buffered reader's lock at exit.
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        server.shutdown()

    if args.stop_on_eof:
        threading.Thread(target=watch_stdin, daemon=True).start()
    server.start()
    print(server.base_url, flush=True)
    server.wait()
    server.stop()
    if server.errors:
        print(f"server: {len(server.errors)} failed connections, first: {server.errors[0]}", file=sys.stderr)


if __name__ == "__main__":
    main()
