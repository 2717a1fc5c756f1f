"""A loopback stand-in for koala.sh: scripted HTTP answers, byte by byte, with gates.

Each request takes the next ``Script`` from the queue (or the default).  A script is a status,
headers, and body parts: ``bytes`` are sent as they are (one ``send`` each), a
``threading.Event`` is waited for (bounded), ``DROP`` closes the connection abruptly.  Every
request is recorded for assertions.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

DROP = object()
WAIT = 60.0  # the longest any bounded wait in the tests may take before calling it hung (2 busy cores)
GATE_TIMEOUT = WAIT  # a gate nobody opens lets the answer go on after this


def sse(*texts: str, done: bool = False) -> bytes:
    """koala.sh's event stream for these text chunks."""
    body = b"".join(b"data: " + json.dumps(t).encode() + b"\n\n" for t in texts)
    return body + (b"data: [DONE]\n\n" if done else b"")


@dataclass
class Script:
    """One scripted answer."""

    parts: list[Any] = field(default_factory=list)
    status: int = 200
    reason: str = "OK"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/event-stream"})
    framing: str = "close"  # "close" (body ends with the connection), "length" or "chunked"
    length: int | None = None  # a Content-Length that may lie, with framing="length"
    before: list[Any] = field(default_factory=list)  # Pause, Notify or Event parts before the head
    hangup: bool = False  # close the connection without answering (after ``before``)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class StandIn:
    """A threaded HTTP/1.1 server on 127.0.0.1 that follows scripts."""

    def __init__(self, route: Callable[[Recorded], Script] | None = None, gate_timeout: float = GATE_TIMEOUT) -> None:
        self.router = route  # picks each request's script from the request (concurrent clients)
        self.arrivals: list[float] = []  # monotonic time of every request
        self.gate_timeout = gate_timeout
        self.scripts: deque[Script] = deque()
        self.default = Script([sse("Hello", ", world", done=True)])
        self.requests: list[Recorded] = []
        self.served = threading.Semaphore(0)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def push(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def start(self) -> Self:
        self._acceptor.start()
        return self

    def __enter__(self) -> Self:  # `with StandIn() as server:` started, and stopped whatever happens
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._acceptor.is_alive():
            self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            request = _read_request(conn)
            if request is None:
                return
            self._received(request)
            if self.router is not None:
                script = self.router(request)
            else:
                script = self.scripts.popleft() if self.scripts else self.default
            self._answer(conn, script)
        except (OSError, ValueError):  # a client that hung up mid-request, or sent half a body
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()
            self.served.release()

    def _received(self, request: Recorded) -> None:
        """Record a request as it arrives; subclasses may note more."""
        self.arrivals.append(time.monotonic())
        self.requests.append(request)

    def _answer(self, conn: socket.socket, script: Script) -> None:
        for part in script.before:
            _play(conn, part, chunked=False, gate_timeout=self.gate_timeout)
        if script.hangup:
            return
        head = [f"HTTP/1.1 {script.status} {script.reason}"]
        head += [f"{name}: {value}" for name, value in script.headers.items()]
        if script.framing == "chunked":
            head.append("Transfer-Encoding: chunked")
        elif script.framing == "length":
            size = script.length
            if size is None:
                size = sum(len(p) for p in script.parts if isinstance(p, bytes))
            head.append(f"Content-Length: {size}")
        head.append("Connection: close")
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        for part in script.parts:
            if part is DROP:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return
            _play(conn, part, chunked=script.framing == "chunked", gate_timeout=self.gate_timeout)
        if script.framing == "chunked":
            conn.sendall(b"0\r\n\r\n")


def _read_request(conn: socket.socket) -> Recorded | None:
    conn.settimeout(GATE_TIMEOUT)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            return None
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    size = int(headers.get("content-length", "0"))
    while len(body) < size:
        piece = conn.recv(65536)
        if not piece:
            break
        body += piece
    return Recorded(method, path, headers, body)


class RoutedStandIn(StandIn):
    """A stand-in that picks each answer from the request's prompt, for concurrent clients.

    ``routes[word]`` is a queue of scripts (the last one is reused) for prompts whose first word
    is ``word``; other prompts get the default.  At every arrival it records how many requests
    the test has not released yet (``len(requests) - released``): a lower bound of what the
    client has in flight.
    """

    def __init__(self) -> None:
        super().__init__(route=self._pick)
        self.routes: dict[str, deque[Script]] = {}
        self.released = 0
        self.unreleased_at_arrival: list[int] = []
        self.arrival = threading.Condition()

    def route(self, prompt: str, *scripts: Script) -> None:
        self.routes[prompt] = deque(scripts)

    def release(self, gate: threading.Event) -> None:
        with self.arrival:
            self.released += 1
        gate.set()

    def wait_requests(self, count: int, timeout: float = WAIT) -> bool:
        with self.arrival:
            return self.arrival.wait_for(lambda: len(self.requests) >= count, timeout)

    def _pick(self, request: Recorded) -> Script:
        body = request.json()
        prompt = body["input"] if "input" in body else body["messages"][-1]["content"]
        queue = self.routes.get(prompt.split(" ")[0])
        if not queue:
            return self.default
        return queue.popleft() if len(queue) > 1 else queue[0]

    def _received(self, request: Recorded) -> None:
        with self.arrival:
            super()._received(request)
            self.unreleased_at_arrival.append(len(self.requests) - self.released)
            self.arrival.notify_all()


# --- Parts for misbehaving servers: pacing, floods, progress signals ---


@dataclass(frozen=True)
class Pause:
    """Wait this long before the next part: a slow but live server (pacing, not synchronisation)."""

    seconds: float


@dataclass(frozen=True)
class Repeat:
    """Send ``piece`` up to ``times`` times, stopping quietly when the client hangs up."""

    piece: bytes
    times: int


@dataclass(frozen=True)
class Notify:
    """Set ``event`` when the answer reaches this point, so a test knows where the server is."""

    event: threading.Event


def _play(conn: socket.socket, part: Any, *, chunked: bool, gate_timeout: float) -> None:
    if isinstance(part, threading.Event):
        part.wait(gate_timeout)
    elif isinstance(part, Notify):
        part.event.set()
    elif isinstance(part, Pause):
        threading.Event().wait(part.seconds)
    elif isinstance(part, Repeat):
        frame = b"%x\r\n%s\r\n" % (len(part.piece), part.piece) if chunked else part.piece
        for _ in range(part.times):
            conn.sendall(frame)  # an OSError (the client hung up) ends the answer
    elif chunked:
        conn.sendall(b"%x\r\n%s\r\n" % (len(part), part))
    else:
        conn.sendall(part)
