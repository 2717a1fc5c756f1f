"""Shared fixtures: a clean environment, the stand-in server, and the real `koala` command."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from standin import StandIn

pytest_plugins = ["daily_helpers"]  # the `koala` (in process) and `dirs` fixtures of issue 11's tests

_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's koala settings, proxies or unbuffered stdio."""
    for name in list(os.environ):
        if name.startswith("KOALA_") or name.upper() in _PROXY_VARS or name == "PYTHONUNBUFFERED":
            monkeypatch.delenv(name, raising=False)
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):  # config, last conversation
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
def server() -> Iterator[StandIn]:
    stand_in = StandIn().start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


def koala_command() -> list[str]:
    """The installed `koala` script next to this interpreter, else `python -m koala_cli`."""
    script = Path(sys.executable).with_name("koala")
    if script.exists():
        return [str(script)]
    found = shutil.which("koala")
    return [found] if found else [sys.executable, "-m", "koala_cli"]


KOALA = koala_command()


def run_koala(*args: str, stdin: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """Run the real command through pipes; stdin is /dev/null unless given."""
    return subprocess.run(
        [*KOALA, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def read_exactly(fd: int, size: int, timeout: float = 20.0) -> bytes:
    """Up to ``size`` bytes from a pipe: less only at end of file or after ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        piece = os.read(fd, size - len(data))
        if not piece:
            break
        data += piece
    return data
