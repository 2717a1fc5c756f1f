"""A loopback HTTP/1.1 server that keeps connections open and counts them (for issue 10's tests).

Unlike ``standin.StandIn`` (one request per connection), it serves request after request on
one connection, as hosted APIs do, so a test can count how many TCP connections a client
opened for its requests.  Each request's answer comes from ``route(request)``, which may
block (on a ``threading.Event`` or ``Barrier``, always bounded) and returns an ``Answer``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standin import WAIT


def events(*texts: str) -> bytes:
    return b"".join(b"data: " + json.dumps(t).encode() + b"\n\n" for t in texts) + b"data: [DONE]\n\n"


@dataclass
class Answer:
    body: bytes = field(default_factory=lambda: events("Hello"))
    status: int = 200
    reason: str = "OK"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/event-stream"})


@dataclass
class Request:
    connection: int  # which TCP connection it came on (1, 2, ...)
    arrived: float  # time.monotonic()
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def prompt(self) -> str:
        value = json.loads(self.body)
        prompt: str = value["input"] if "input" in value else value["messages"][-1]["content"]
        return prompt


def echo(request: Request) -> Answer:
    return Answer(events("re: ", request.prompt))


class KeepAlive:
    def __init__(self, route: Callable[[Request], Answer] = echo) -> None:
        self.route = route
        self.connections = 0
        self.requests: list[Request] = []
        self.arrival = threading.Condition()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> KeepAlive:
        self._acceptor.start()
        return self

    def __enter__(self) -> KeepAlive:  # started, and stopped whatever happens
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):  # wakes the acceptor now, not at its next 0.2 s poll
            self._listener.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(WAIT)
        with self.arrival:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(WAIT)
        self._listener.close()

    def wait_requests(self, count: int, timeout: float = WAIT) -> bool:
        with self.arrival:
            return self.arrival.wait_for(lambda: len(self.requests) >= count, timeout)

    def prompts(self) -> list[str]:
        with self.arrival:
            return [request.prompt for request in self.requests]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.arrival:
                self.connections += 1
                number = self.connections
                self._conns.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buffer = bytearray()
        try:
            conn.settimeout(WAIT)
            while not self._stop.is_set():
                parsed = _read(conn, buffer)
                if parsed is None:
                    return
                path, headers, body = parsed
                request = Request(number, time.monotonic(), path, headers, body)
                with self.arrival:
                    self.requests.append(request)
                    self.arrival.notify_all()
                answer = self.route(request)
                head = [f"HTTP/1.1 {answer.status} {answer.reason}"]
                head += [f"{name}: {value}" for name, value in answer.headers.items()]
                head += [f"Content-Length: {len(answer.body)}", "Connection: keep-alive"]
                conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer.body)
        except (OSError, ValueError):
            pass
        finally:
            with self.arrival:
                self._conns.discard(conn)
            conn.close()


def _read(conn: socket.socket, buffer: bytearray) -> tuple[str, dict[str, str], bytes] | None:
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        piece = conn.recv(65536)
        if not piece:
            return None
        buffer += piece
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    headers: dict[str, Any] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    size = int(headers.get("content-length", "0"))
    while len(buffer) < size:
        piece = conn.recv(65536)
        if not piece:
            return None
        buffer += piece
    body = bytes(buffer[:size])
    del buffer[:size]
    return lines[0].split(" ")[1], headers, body
