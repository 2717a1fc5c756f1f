"""A keep-alive HTTP/1.1 (optionally HTTPS) loopback chat server that counts connections.

For the scale benchmarks: many short replies, each after ``latency`` seconds, over
connections kept open between requests (as hosted APIs do).  It answers both protocols:

``POST …/api/gpt/``            koala.sh: ``data: "<json string>"`` events, then ``data: [DONE]``
``POST …/v1/chat/completions`` OpenAI: ``data: {"choices":[{"delta":{"content":…}}]}``, then ``[DONE]``

The reply is ``"echo: "`` and the first 24 characters of the prompt (koala's ``input``, the
last OpenAI message), in two events, with a ``Content-Length``: a client can check every
result.  It counts TCP connections accepted, TLS handshakes completed (and how many of them
resumed a session), requests, and the most connections open at once.

Run as a script it prints its base URL, then answers lines on stdin: ``stats`` prints the
counts since the last ``stats`` as one JSON line (and starts counting afresh); end of input
stops it.  One thread per connection with blocking sockets, like ``server.py``.

    python bench/pool_server.py --latency 0.05 --cert server.pem --key server.key
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import ssl
import sys
import threading
import time
from dataclasses import asdict, dataclass

__all__ = ["Counts", "PoolServer"]

SOCKET_TIMEOUT = 60.0
MAX_HEAD = 64 * 1024
MAX_BODY = 512 * 1024 * 1024


@dataclass
class Counts:
    connections: int = 0
    handshakes: int = 0
    resumed: int = 0
    requests: int = 0
    max_open: int = 0
    errors: int = 0
    first_error: str = ""


def reply_text(prompt: str) -> str:
    return "echo: " + prompt[:24]


def _events(text: str, openai: bool) -> bytes:
    half = len(text) // 2
    pieces = [text[:half], text[half:]]
    if openai:
        lines = [
            json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            *(json.dumps({"choices": [{"index": 0, "delta": {"content": p}}]}, ensure_ascii=False) for p in pieces),
            json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ]
    else:
        lines = [json.dumps(p, ensure_ascii=False) for p in pieces]
    return "".join(f"data: {line}\n\n" for line in [*lines, "[DONE]"]).encode("utf-8")


class PoolServer:
    def __init__(self, *, latency: float = 0.05, cert: str | None = None, key: str | None = None) -> None:
        self.latency = latency
        self.context: ssl.SSLContext | None = None
        if cert:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(cert, key)
        self.counts = Counts()
        self._open = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self._listener.settimeout(0.2)
        self._acceptor = threading.Thread(target=self._accept, name="pool-server", daemon=True)
        self._conns: set[socket.socket] = set()

    @property
    def base_url(self) -> str:
        scheme = "https" if self.context else "http"
        return f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> PoolServer:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        with self._lock:
            for conn in list(self._conns):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def take_counts(self) -> Counts:
        with self._lock:
            counts, self.counts = self.counts, Counts(max_open=self._open)
        return counts

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.counts.connections += 1
                self._open += 1
                self.counts.max_open = max(self.counts.max_open, self._open)
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _error(self, exc: BaseException) -> None:
        with self._lock:
            self.counts.errors += 1
            self.counts.first_error = self.counts.first_error or f"{type(exc).__name__}: {exc}"

    def _serve(self, raw: socket.socket) -> None:
        conn: socket.socket = raw
        try:
            raw.settimeout(SOCKET_TIMEOUT)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                tls = self.context.wrap_socket(raw, server_side=True)
                conn = tls
                with self._lock:
                    self.counts.handshakes += 1
                    self.counts.resumed += tls.session_reused
            buffer = bytearray()
            while not self._stop.is_set():
                request = _read_request(conn, buffer)
                if request is None:
                    return
                path, close, body = request
                with self._lock:
                    self.counts.requests += 1
                answer = self._answer(path, body, close)
                if self.latency:
                    self._stop.wait(self.latency)
                conn.sendall(answer)
                if close:
                    return
        except (OSError, ValueError, ssl.SSLError) as exc:
            if not self._stop.is_set() and not isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                self._error(exc)
        finally:
            with self._lock:
                self._open -= 1
                self._conns.discard(raw)
            with contextlib.suppress(OSError):
                conn.close()

    def _answer(self, path: str, body: bytes, close: bool) -> bytes:
        openai = path.rstrip("/").endswith("/v1/chat/completions")
        if not (openai or path.endswith("/api/gpt/")):
            return _head(404, "Not Found", b"", "text/plain", close)
        try:
            value = json.loads(body)
            prompt = value["messages"][-1]["content"] if openai else value["input"]
        except (ValueError, KeyError, IndexError, TypeError):
            return _head(400, "Bad Request", b"bad request", "text/plain", close)
        return _head(200, "OK", _events(reply_text(str(prompt)), openai), "text/event-stream", close)


def _head(status: int, reason: str, body: bytes, content_type: str, close: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _read_request(conn: socket.socket, buffer: bytearray) -> tuple[str, bool, bytes] | None:
    """One request from the connection (its path, whether it asks to close, its body); None at EOF."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        piece = conn.recv(65536)
        if not piece:
            if buffer:
                raise ValueError("connection closed in a request head")
            return None
        buffer += piece
        if len(buffer) > MAX_HEAD and buffer.find(b"\r\n\r\n") < 0:
            raise ValueError("request head too large")
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    _method, path, version = lines[0].split(" ", 2)
    size, close = 0, version == "HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            size = int(value)
        elif name == "connection":
            close = value.strip().lower() == "close"
        elif name == "transfer-encoding":
            raise ValueError("chunked request bodies are not supported")
    if size > MAX_BODY:
        raise ValueError("request body too large")
    while len(buffer) < size:
        piece = conn.recv(max(65536, size - len(buffer)))
        if not piece:
            raise ValueError("connection closed in a request body")
        buffer += piece
    body = bytes(buffer[:size])
    del buffer[:size]
    return path, close, body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A keep-alive loopback chat server that counts connections.")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds before each reply")
    parser.add_argument("--cert", help="PEM certificate: serve HTTPS")
    parser.add_argument("--key", help="its PEM key")
    parser.add_argument("--lifetime", type=float, default=3600.0, help="stop after this many seconds")
    args = parser.parse_args(argv)
    server = PoolServer(latency=args.latency, cert=args.cert, key=args.key).start()
    print(server.base_url, flush=True)
    deadline = time.monotonic() + args.lifetime

    def expire() -> None:  # never outlive a runner that forgot to close our stdin
        time.sleep(max(0.0, deadline - time.monotonic()))
        os._exit(0)

    threading.Thread(target=expire, daemon=True).start()
    try:
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps(asdict(server.take_counts())), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
