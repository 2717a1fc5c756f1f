"""History files through `koala` in process: a successful turn is saved once; a history that
cannot be created is refused before the request; a symlinked history is followed, and one to
a read-only file refused.  (Where the exit status must agree with the history after the last
output failed -- a full disk, a reader gone -- or chat reads a pipe: tests/process/test_history_agrees.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import PRIOR, invoke
from standin import StandIn


def test_success_saves_the_turn_once(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(PRIOR)
    result = invoke("ask", "--base-url", server.base_url, "-H", str(path), "hi")
    assert result.returncode == 0
    assert result.stdout == b"Hello, world\n"
    assert path.read_bytes() == PRIOR + (
        b'{"role": "user", "content": "hi"}\n{"role": "assistant", "content": "Hello, world"}\n'
    )


# --- histories that cannot be created ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["dangling-into-missing-directory", "symlink-loop", "missing-directory"])
@pytest.mark.parametrize("command", ["ask", "chat"])
def test_history_that_cannot_be_created_is_refused_before_the_request(
    server: StandIn, tmp_path: Path, kind: str, command: str
) -> None:
    path = tmp_path / "chat.jsonl"
    if kind == "dangling-into-missing-directory":
        path.symlink_to(tmp_path / "missing" / "target.jsonl")
    elif kind == "symlink-loop":
        path.symlink_to(tmp_path / "other.jsonl")
        (tmp_path / "other.jsonl").symlink_to(path)
    else:
        path = tmp_path / "missing" / "chat.jsonl"
    args = ["--base-url", server.base_url, "-H", str(path)]
    result = invoke(command, *args, "hi") if command == "ask" else invoke(command, *args, stdin=b"hi\n")
    assert result.returncode == 2, result.stderr
    assert result.stdout == b""
    assert result.stderr.startswith(b"koala: error: ") and result.stderr.count(b"\n") == 1, result.stderr
    assert str(path).encode() in result.stderr
    assert server.requests == []  # refused before the request
    assert not (tmp_path / "missing").exists()


def test_symlinked_history_is_followed(server: StandIn, tmp_path: Path) -> None:
    """A symlink to a writable file, or to a file yet to be made in a writable directory."""
    (tmp_path / "real").mkdir()
    existing, new = tmp_path / "real" / "a.jsonl", tmp_path / "real" / "b.jsonl"
    existing.write_bytes(PRIOR)
    for target in (existing, new):
        link = tmp_path / f"link-{target.name}"
        link.symlink_to(target)
        result = invoke("ask", "--base-url", server.base_url, "-H", str(link), "hi")
        assert result.returncode == 0, result.stderr
        assert link.is_symlink()  # still a link: the target was extended, not replaced
        assert target.read_bytes().endswith(b'{"role": "assistant", "content": "Hello, world"}\n')
    assert len(server.requests) == 2
    assert (new.stat().st_mode & 0o777) == 0o600


def test_symlink_to_a_read_only_file_is_refused_before_the_request(server: StandIn, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may write any file")
    target = tmp_path / "ro.jsonl"
    target.write_bytes(PRIOR)
    target.chmod(0o400)
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    result = invoke("ask", "--base-url", server.base_url, "-H", str(link), "hi")
    assert result.returncode == 2
    assert server.requests == []
