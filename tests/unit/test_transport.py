"""The transport in process: backoff for any number of retries, which resolver failures are
worth a retry, and failures while building the client, under asyncio and trio."""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

import anyio
import pytest
from standin import StandIn

from koala_cli import Koala, NetworkError, UsageError, stopclock
from koala_cli.backoff import MAX_RETRY_AFTER, backoff_delay

# httpx's own inner generator, left to the GC once a reply ends at [DONE] (as pyproject notes).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object AsyncResponseStream.__aiter__"
    ":pytest.PytestUnraisableExceptionWarning"
)
BACKENDS = ["asyncio", "trio"]
HI: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("attempt", [1, 10, 1025, 1100, 10**6, 10**30])
def test_backoff_is_capped_for_any_attempt(attempt: int) -> None:
    delay = backoff_delay(attempt)
    assert MAX_RETRY_AFTER / 2 * (attempt > 10) <= delay <= MAX_RETRY_AFTER


class Resolver:
    """``socket.getaddrinfo`` for one made-up name: fails with ``errors`` in turn, then resolves
    it to loopback; every other name goes to the real resolver."""

    def __init__(self, name: str, *errors: int) -> None:
        self.name = name
        self.errors = list(errors)
        self.calls = 0
        self.real = socket.getaddrinfo

    def __call__(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (self.name, self.name.encode()):
            return self.real(host, *args, **kwargs)
        flags = args[4] if len(args) > 4 else kwargs.get("flags", 0)
        if flags & socket.AI_NUMERICHOST:  # trio's check for an address first: not a lookup
            return self.real(host, *args, **kwargs)
        self.calls += 1
        if self.errors:
            code = self.errors.pop(0)
            raise socket.gaierror(
                code, {socket.EAI_AGAIN: "Temporary failure in name resolution"}.get(code, "Name or service not known")
            )
        return self.real("127.0.0.1", *args, **kwargs)


def ask(url: str, backend: str, retries: int = 3) -> tuple[str, list[str]]:
    notices: list[str] = []

    async def main() -> str:
        return await Koala.create_async("", HI, base_url=url, retries=retries, on_retry=notices.append, timeout=10)

    return anyio.run(main, backend=backend), notices


@pytest.mark.usefixtures("quick_backoff")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_temporary_resolver_failure_is_retried(
    server: StandIn, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    resolver = Resolver("flaky.invalid", socket.EAI_AGAIN)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    port = server.base_url.rsplit(":", 1)[1]
    text, notices = ask(f"http://flaky.invalid:{port}", backend)
    assert text == "Hello, world"
    assert resolver.calls == 2
    assert len(notices) == 1 and "Temporary failure in name resolution" in notices[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("code", ["EAI_NONAME", "EAI_NODATA"])
def test_a_name_that_does_not_exist_is_not_retried(
    server: StandIn, monkeypatch: pytest.MonkeyPatch, backend: str, code: str
) -> None:
    if not hasattr(socket, code):
        pytest.skip(f"no {code} here")
    resolver = Resolver("nowhere.invalid", getattr(socket, code), getattr(socket, code))
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(NetworkError) as caught:
        ask("http://nowhere.invalid:9", backend)
    assert resolver.calls == 1
    assert "nowhere.invalid" in str(caught.value)
    assert "(2 attempts)" not in str(caught.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_running_out_of_file_descriptors_while_building_the_client_is_a_network_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, backend: str
) -> None:
    import ssl

    def exhausted(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", exhausted)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    with pytest.raises(NetworkError, match="Too many open files"):
        ask("https://127.0.0.1:9", backend, retries=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_ssl_cert_file_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, backend: str) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "nowhere.pem"))
    with pytest.raises(UsageError, match="SSL_CERT_FILE"):
        ask("https://127.0.0.1:9", backend, retries=0)


# The read timeout, STOP_SLACK, when the loop is held and for how long, and how long after it
# runs again the "after" answer comes, in seconds (the test's docstring has the margins).
TIMEOUT, SLACK, HOLD_AFTER, HOLD, LATE_BY = 0.5, 0.1, 0.1, 0.7, 0.25


CASES = [(scheme, pause) for pause in ("waiting", "after") for scheme in ("http", "https")]
PAUSES = {"waiting": 0.3, "after": HOLD_AFTER + HOLD + LATE_BY}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_read_timeout_that_fires_late_reads_on(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, backend: str
) -> None:
    """A loop held up past a read's deadline (as a stopped process is) does not make the
    silence the server's.  "after": the answer comes 0.25 s after the loop runs again, well
    within the 0.5 s timeout but long after the first deadline, which fires late; the read is
    tried again with a whole timeout and finds it (checked: a read timed out, and the reply
    is whole).  "waiting": the answer came while the loop was held, and is read whole with
    nothing lost -- the loop sees the data before the expired timeout, so this case guards the
    bytes, not the retry (it passes with STOP_SLACK at 100 s; "after" fails).

    The loop is held 0.7 s from 0.1 s after the first chunk: the pending read has waited at
    least 0.8 s when it runs again (both sleeps only ever run long), 0.2 s past its 0.5 s
    timeout plus the 0.1 s a timeout may fire late without a stop (STOP_SLACK, made 0.1 s
    here from 0.5 s to keep the hold short; the rule is the same).  The read cannot time out
    before the hold: the hold's 0.1 s wait ends 0.4 s before the read's deadline, on the same
    loop, and a loop held up then only holds both.  The "waiting" answer comes 0.5 s before
    the loop runs again.  A hold that runs long, or a server thread that answers late, would
    have to be 0.25 s off to make "after" a "waiting" or miss the second timeout.

    The four cases (http and https, waiting and after) each hold their own loop in their own
    thread, at the same time: a held loop blocks only its thread, so they take one hold."""
    import contextlib
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpcore
    from httpcore._backends.anyio import AnyIOStream
    from httpcore._backends.trio import TrioStream
    from standin import Pause, Script, sse
    from tlsstandin import TLSStandIn

    timed_out: dict[int, int] = {}  # by thread: the network reads that timed out

    def counted(read: Any) -> Any:
        async def counted_read(self: Any, max_bytes: int, timeout: float | None = None) -> bytes:
            try:
                return bytes(await read(self, max_bytes, timeout))
            except httpcore.ReadTimeout:
                timed_out[threading.get_ident()] = timed_out.get(threading.get_ident(), 0) + 1
                raise

        return counted_read

    for stream in (AnyIOStream, TrioStream):
        monkeypatch.setattr(stream, "read", counted(stream.read))
    monkeypatch.setattr(stopclock, "STOP_SLACK", SLACK)
    pki = request.getfixturevalue("pki")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))

    def run(server: StandIn) -> tuple[str, int]:
        chunks: list[str] = []
        before = timed_out.get(threading.get_ident(), 0)

        async def main() -> None:
            async def hold_up_the_loop() -> None:
                await anyio.sleep(HOLD_AFTER)
                time.sleep(HOLD)  # blocks every task, as a stop would: the pending read's timeout passes

            async with anyio.create_task_group() as group:
                stream = Koala.create_async_generator("", HI, base_url=server.base_url, timeout=TIMEOUT, retries=0)
                async for chunk in stream:
                    if not chunks:
                        group.start_soon(hold_up_the_loop)
                    chunks.append(chunk)

        anyio.run(main, backend=backend)
        return "".join(chunks), timed_out.get(threading.get_ident(), 0) - before

    with contextlib.ExitStack() as running:  # every server started is stopped, whatever fails
        servers: dict[tuple[str, str], StandIn] = {}
        for scheme, pause in CASES:
            server = servers[scheme, pause] = TLSStandIn(pki.good) if scheme == "https" else StandIn()
            server.push(Script([sse("first"), Pause(PAUSES[pause]), sse(" second", done=True)]))
            server.start()
            running.callback(server.stop)
        with ThreadPoolExecutor(len(CASES)) as pool:
            futures = {case: pool.submit(run, server) for case, server in servers.items()}
    outcomes = {}  # every case's, named: one that fails hides no other
    for (scheme, pause), future in futures.items():
        if future.exception() is not None:
            outcomes[scheme, pause] = (repr(future.exception()), 0, False)
            continue
        reply, timeouts = future.result()
        outcomes[scheme, pause] = (reply, len(servers[scheme, pause].requests), pause == "waiting" or timeouts > 0)
    assert outcomes == dict.fromkeys(CASES, ("first second", 1, True))
