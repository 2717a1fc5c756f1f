"""-H naming something that is not a regular file, and cannot block: refused at once, in
process.  (A FIFO without a writer and a terminal, which would block a reader, are refused by
the real `koala` in tests/process/test_hangs.py, where a hang is bounded by a timeout.)
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HISTORY_READERS, invoke
from standin import StandIn


@pytest.fixture(params=["socket", "devnull"])
def special(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A path that names no regular file: a listening Unix socket (opening it fails at once),
    a character device that reads as empty."""
    if request.param == "socket":
        path = tmp_path / "sock"
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(path))
            listener.listen()
            yield path
    else:
        yield Path(os.devnull)


@pytest.mark.parametrize("command", HISTORY_READERS.values(), ids=HISTORY_READERS.keys())
def test_history_that_is_no_regular_file_is_refused_at_once(server: StandIn, special: Path, command: list[str]) -> None:
    args = [str(special) if word == "{}" else word for word in command]
    if command[0] != "history":
        args += ["--base-url", server.base_url]
    started = time.monotonic()
    result = invoke(*args)
    out, err = result.stdout, result.stderr
    assert time.monotonic() - started < 10
    assert result.returncode == 2, err
    assert out == b""
    assert err.startswith(b"koala: error: ") and err.count(b"\n") == 1, err
    assert b"not a regular file" in err
    assert server.requests == []
