"""`koala batch` under a low limit on open files: a job that cannot get a file descriptor
("Too many open files") is that job's error result, and every result already earned is kept."""

from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import KOALA
from standin import Recorded, Script, sse
from tlsstandin import TLSStandIn, make_pki

JOBS = 40
LIMIT = 24  # enough to start Python and some connections, not all forty


@pytest.fixture
def held() -> Iterator[tuple[TLSStandIn, threading.Event, str]]:
    """A TLS server whose answers wait at a gate, so connections pile up; and its CA file."""
    import tempfile

    gate = threading.Event()
    with tempfile.TemporaryDirectory() as folder:
        pki = make_pki(Path(folder))

        def route(request: Recorded) -> Script:
            return Script([gate, sse("fine", done=True)])

        server = TLSStandIn(pki.good, route=route).start()
        try:
            yield server, gate, str(pki.ca)
        finally:
            gate.set()
            server.stop()


def limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def first_line(fd: int, timeout: float = 30.0) -> bytes:
    """Bytes from a pipe up to its first newline (bounded in time)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data and time.monotonic() < deadline:
        if select.select([fd], [], [], max(deadline - time.monotonic(), 0))[0]:
            piece = os.read(fd, 1)
            if not piece:
                break
            data += piece
    return data


def test_running_out_of_file_descriptors_fails_jobs_not_the_batch(
    held: tuple[TLSStandIn, threading.Event, str], tmp_path: Path
) -> None:
    server, gate, cafile = held
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_bytes(b"".join(b'{"id": %d, "prompt": "hi"}\n' % n for n in range(JOBS)))
    command = [*KOALA, "batch", "--unordered", "--concurrency", str(JOBS), "--retries", "0"]
    process = subprocess.Popen(
        [*command, "--base-url", server.base_url, str(jobs)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SSL_CERT_FILE": cafile},
        preexec_fn=limit_files,  # only setrlimit, before exec
    )
    try:
        assert process.stdout is not None
        # The jobs that found no descriptor fail at once (--unordered prints them as they end),
        # while the others hold their connection at the gate; then let those finish.
        first = first_line(process.stdout.fileno())
        gate.set()
        rest, err = process.communicate(timeout=60)
    finally:
        gate.set()
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert b"Traceback" not in err, err.decode()
    results = [json.loads(line) for line in (first + rest).splitlines()]
    assert sorted(r["id"] for r in results) == list(range(JOBS))
    failed = [r for r in results if not r["ok"]]
    assert failed, "the limit was never reached"
    assert any(r["ok"] for r in results), err.decode()
    for record in failed:
        assert record["error"]["exit_status"] == 3, record
        assert "open files" in record["error"]["message"], record
    assert process.returncode == 3
