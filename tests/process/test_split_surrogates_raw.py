"""The real command: a surrogate pair split over two events (and two reads) prints whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_koala
from standin import Pause, Script, StandIn


def event(escaped: str) -> bytes:
    return b'data: "' + escaped.encode() + b'"\n\n'


@pytest.mark.parametrize("separate", [False, True], ids=["one-read", "two-reads"])
def test_split_pair_prints_whole(server: StandIn, separate: bool) -> None:
    first, second = event("A\\ud83d"), event("\\ude00B")
    gap = [Pause(0.05)] if separate else []  # pacing: most likely two reads (the unit tests make sure)
    server.push(Script([first, *gap, second, b"data: [DONE]\n\n"]))
    result = run_koala("ask", "--retries", "0", "--base-url", server.base_url, "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "A😀B\n".encode()


def test_split_pair_in_json_and_history_already_whole(server: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    server.push(Script([event("A\\ud83d"), event("\\ude00B")]))
    result = run_koala("ask", "--json", "--base-url", server.base_url, "-H", str(path), "hi")
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["text"] == "A😀B"
    assert json.loads(path.read_text().splitlines()[-1])["content"] == "A😀B"
