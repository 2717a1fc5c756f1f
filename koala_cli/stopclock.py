"""Time spent stopped is not idle time.

A process stopped with Ctrl-Z (SIGTSTP) or SIGSTOP and resumed with ``fg`` finds its read
timeouts expired: the monotonic clock kept running while it could not read.  A read whose
timeout fires much later than it was due (past ``STOP_SLACK``) was not idle for that long --
the process was stopped, or its event loop blocked -- so the read is simply tried again
with a whole timeout: first whatever waited in the socket, then as long again as a read
that just began.  A timeout that fires on time is a real silence and stands.

The network streams of httpcore are wrapped to do so; cancelling a read before it returned
leaves its bytes in the socket, so trying again loses nothing.
"""

from __future__ import annotations

import time
from typing import Any

import httpcore
import httpx

__all__ = ["STOP_SLACK", "stop_aware"]

STOP_SLACK = 0.5  # seconds a timeout may fire late without the process having been stopped
MAX_RESUMES = 10_000  # consecutive late timeouts of one read, bounded like every loop


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        for _ in range(MAX_RESUMES):
            started = time.monotonic()
            try:
                return await self._inner.read(max_bytes, timeout)
            except httpcore.ReadTimeout:
                if timeout is None or time.monotonic() - started < timeout + STOP_SLACK:
                    raise
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_tcp(*args, **kwargs))

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(*args, **kwargs))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def stop_aware(transport: httpx.AsyncHTTPTransport) -> None:
    """Make a transport's reads stop-aware (a no-op should httpcore's layout ever change)."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.AsyncNetworkBackend) and not isinstance(backend, _Backend):
        pool._network_backend = _Backend(backend)  # type: ignore[union-attr]
