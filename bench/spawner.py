"""Start, time and reap benchmark commands from a small process, so their peak RSS is their own.

Why a separate process: on Linux a child's ``ru_maxrss`` (from ``wait4`` or
``RUSAGE_CHILDREN``) starts from the high-water mark of the process that forked it --
``subprocess`` uses ``vfork``, so ``exec`` records the *parent's* peak as the child's.  A
runner that has held a few 100,000-chunk outputs would report its own size for every child.
So ``Spawner`` forks a helper while the runner is still small; the helper forks and execs
each command, waits for it with ``wait4`` and reports its exit status, its own peak RSS and
its start and end on ``time.perf_counter()`` (CLOCK_MONOTONIC, the same clock in every
process).  The runner keeps the pipes' reading ends, so it reads the output as it comes and
can time when a byte arrives.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import selectors
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Run", "SpawnError", "Spawner"]

READ_SIZE = 1 << 20
REPLY_TIMEOUT = 30.0  # the helper answers a request at once; a reaped child's report too


class SpawnError(Exception):
    """A command could not be run to its end (it hung, or the helper is gone)."""


@dataclass
class Run:
    """One finished command: wall time (fork to reaped), its own peak RSS, its output."""

    wall: float
    cpu: float  # user + system seconds of the command itself
    rss_kib: int
    status: int
    stdout: bytes
    stderr: bytes
    seen_at: float | None = None  # perf_counter() when ``watch`` first held on the stdout so far


class Spawner:
    """A helper process, forked now, that runs one command at a time for this one, in ``cwd``."""

    def __init__(self, env: dict[str, str], cwd: str) -> None:
        self._sock, helper_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = os.fork()
        if self.pid == 0:  # the helper
            self._sock.close()
            status = 0
            try:
                os.chdir(cwd)  # so that ``python -c`` never imports a koala_cli from the caller's folder
                _serve(helper_sock, env)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        helper_sock.close()
        self._sock.settimeout(REPLY_TIMEOUT)
        self.helper_rss_kib = 0

    def close(self) -> None:
        """Stop the helper (it exits when its socket closes) and reap it."""
        self._sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def __enter__(self) -> Spawner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        argv: Sequence[str],
        *,
        watch: Callable[[bytes], bool] | None = None,
        timeout: float = 120.0,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
    ) -> Run:
        """Run ``argv`` with stdin from /dev/null and stdout, stderr on pipes read here as they fill.

        ``env`` adds to (or replaces in) the environment the spawner was made with; ``stdin``
        names a file to read instead of /dev/null."""
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            request = json.dumps({"argv": list(argv), "env": env or {}, "stdin": stdin}).encode()
            socket.send_fds(self._sock, [request], [out_write, err_write])
        finally:
            os.close(out_write)
            os.close(err_write)
        try:
            started = self._reply()
            if "error" in started:
                raise SpawnError(f"{argv[0]}: {started['error']}")
            out, err, seen_at = _read_all(out_read, err_read, watch, time.perf_counter() + timeout)
            if seen_at is not None and seen_at < 0:  # the deadline passed
                os.kill(started["pid"], signal.SIGKILL)
                self._reply()
                raise SpawnError(f"{' '.join(argv)}: still running after {timeout:g} s; killed")
            reaped = self._reply()
        finally:
            os.close(out_read)
            os.close(err_read)
        self.helper_rss_kib = reaped["helper_rss_kib"]
        wall = reaped["end"] - started["start"]
        return Run(wall, reaped["cpu"], reaped["rss_kib"], reaped["status"], out, err, seen_at)

    def _reply(self) -> dict[str, Any]:
        try:
            message = self._sock.recv(65536)
        except TimeoutError:
            raise SpawnError("the spawner helper did not answer") from None
        if not message:
            raise SpawnError("the spawner helper is gone")
        reply: dict[str, Any] = json.loads(message)
        return reply


def _read_all(
    out_fd: int, err_fd: int, watch: Callable[[bytes], bool] | None, deadline: float
) -> tuple[bytes, bytes, float | None]:
    """Both pipes to their end; ``seen_at`` is when ``watch`` first held (-1.0: the deadline passed)."""
    out, err = bytearray(), bytearray()
    buffers = {out_fd: out, err_fd: err}
    seen_at: float | None = None
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return bytes(out), bytes(err), -1.0
            for key, _ in selector.select(remaining):
                data = os.read(key.fd, READ_SIZE)
                now = time.perf_counter()
                if not data:
                    selector.unregister(key.fd)
                    continue
                buffers[key.fd] += data
                if watch is not None and seen_at is None and key.fd == out_fd and watch(bytes(out)):
                    seen_at = now
    return bytes(out), bytes(err), seen_at


def _serve(sock: socket.socket, env: dict[str, str]) -> None:
    """The helper's loop: one request, one child, two replies (started, reaped), until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides; Ctrl-C reaches the children
    while True:
        message, fds, _, _ = socket.recv_fds(sock, 65536, 2)
        if not message:
            return
        request = json.loads(message)
        argv = request["argv"]
        start = time.perf_counter()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"error": str(exc)}).encode())
            continue
        if pid == 0:
            _exec(argv, {**env, **request["env"]}, fds, request["stdin"] or os.devnull)
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({"pid": pid, "start": start}).encode())
        _, wait_status, usage = os.wait4(pid, 0)
        end = time.perf_counter()
        reply = {
            "status": os.waitstatus_to_exitcode(wait_status),
            "rss_kib": usage.ru_maxrss,
            "cpu": usage.ru_utime + usage.ru_stime,
            "end": end,
            "helper_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
        sock.send(json.dumps(reply).encode())


def _exec(argv: list[str], env: dict[str, str], fds: list[int], stdin: str) -> None:
    """In the forked child: stdin from ``stdin`` (/dev/null), stdout and stderr on the pipes, then exec."""
    try:
        null = os.open(stdin, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (null, *fds):
            if fd > 2:
                os.close(fd)
        for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):  # as subprocess's restore_signals
            signal.signal(signum, signal.SIG_DFL)
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(2, f"spawner: cannot run {argv[0]}: {exc}\n".encode())
    finally:
        os._exit(127)
