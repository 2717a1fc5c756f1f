"""What only a real process can be given: a stdout on a full disk or closed, a closed stderr,
a file-size limit that makes the history append fail midway, permissions that bind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HISTORY_BYTES, KOALA, WAIT, history_file, one_line_error, run_koala
from standin import Script, StandIn, sse


def binding_permissions(path: Path, mode: int) -> tuple[str, ...]:
    """A command prefix under which ``path``'s mode bits (set here) bind, even for root.

    Root bypasses permission bits through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH; dropping
    them (inheritable and bounding sets) keeps the uid, so the interpreter under /root stays
    readable while a chmod 000 file does not.  Skips when no such prefix can be had.
    """
    path.chmod(mode)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file permissions cannot be made to bind")
        caps = "-dac_override,-dac_read_search"
        prefix = (setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}")
    wanted = (os.R_OK if not mode & 0o400 else 0) | (os.W_OK if not mode & 0o200 else 0)
    check = "import os, sys; sys.exit(os.access(sys.argv[1], int(sys.argv[2])))"
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", check, str(path), str(wanted)],
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    if probe.returncode != 0:
        path.chmod(0o600)
        pytest.skip(f"file permissions do not bind here: {probe.stderr.decode().strip() or 'access granted'}")
    return prefix


def test_unreadable_history(server: StandIn, tmp_path: Path) -> None:
    path = history_file(tmp_path)
    prefix = binding_permissions(path, 0)
    try:
        result = run_koala("ask", "--base-url", server.base_url, "--retries", "0", "-H", str(path), "hi", prefix=prefix)
    finally:
        path.chmod(0o600)
    assert result.returncode == 2
    message = one_line_error(result)
    assert str(path) in message
    assert re.search("permission denied|not readable", message, re.IGNORECASE), message
    assert server.requests == []
    assert path.read_bytes() == HISTORY_BYTES


def test_unwritable_history_fails_before_asking(server: StandIn, tmp_path: Path) -> None:
    path = history_file(tmp_path)
    prefix = binding_permissions(path, 0o400)
    try:
        result = run_koala("ask", "--base-url", server.base_url, "--retries", "0", "-H", str(path), "hi", prefix=prefix)
    finally:
        path.chmod(0o600)
    assert result.returncode == 2
    assert str(path) in one_line_error(result)
    assert server.requests == []  # refused before the question was spent
    assert path.read_bytes() == HISTORY_BYTES


@pytest.mark.parametrize(
    ("before", "room"),
    [(HISTORY_BYTES, 10), (HISTORY_BYTES[:-1], 30)],
    ids=["partial", "no-eol-partial"],
)
def test_disk_full_while_appending_end_to_end(server: StandIn, tmp_path: Path, before: bytes, room: int) -> None:
    """RLIMIT_FSIZE (SIGXFSZ ignored, as Python does) makes the append's write stop short, then fail."""
    path = history_file(tmp_path, before)
    limit = len(before) + room
    wrapper = (
        sys.executable,
        "-c",
        "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); os.execv(sys.argv[1], sys.argv[1:])",
    )
    server.push(Script([sse("a reply long enough to need more room than there is")]))
    result = run_koala("ask", "--base-url", server.base_url, "--retries", "0", "-H", str(path), "hi", prefix=wrapper)
    assert result.returncode != 0
    message = one_line_error(result)
    assert str(path) in message
    assert path.read_bytes() == before  # cut back to its exact earlier length


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("args", [["ask", "hi"], ["models"], ["--help"], ["ask", "--dry-run", "hi"]])
def test_full_disk_on_stdout_is_one_line(server: StandIn, args: list[str]) -> None:
    if args[0] == "ask":
        args = ["ask", "--base-url", server.base_url, *args[1:]]
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [*KOALA, *args], stdout=full, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=WAIT, check=False
        )
    assert result.returncode == 1
    assert "No space left on device" in one_line_error(result)


def test_closed_stdout_is_one_line(server: StandIn) -> None:
    result = subprocess.run(
        ["bash", "-c", '"$@" >&-', "-", *KOALA, "ask", "--base-url", server.base_url, "hi"],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 1
    assert "standard output is closed" in one_line_error(result)


def test_closed_stderr_keeps_the_exit_status(server: StandIn) -> None:
    server.push(Script([b"no"], status=500, reason="Internal Server Error"))
    result = subprocess.run(
        ["bash", "-c", '"$@" 2>&-', "-", *KOALA, "ask", "--base-url", server.base_url, "--retries", "0", "hi"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 4
