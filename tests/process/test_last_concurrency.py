"""Issue 11: concurrent plain `koala ask` runs never mix two conversations in the last one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import KOALA
from standin import Recorded, Script, StandIn, sse

RUNS = 8


def test_concurrent_plain_asks_leave_one_whole_conversation(tmp_path: Path) -> None:
    def route(request: Recorded) -> Script:
        prompt = request.json()["input"]
        return Script([sse(f"answer to {prompt} ", "in two parts")])

    server = StandIn(route).start()
    env_state = tmp_path / "state"
    try:
        import os

        env = {**os.environ, "XDG_STATE_HOME": str(env_state), "HOME": str(tmp_path)}
        runs = [
            subprocess.Popen(
                [*KOALA, "ask", "--base-url", server.base_url, "--retries", "0", f"question {n}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            for n in range(RUNS)
        ]
        for run in runs:
            _out, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
    finally:
        server.stop()
    last = env_state / "koala" / "last.jsonl"
    messages = [json.loads(line) for line in last.read_text().splitlines()]
    assert len(messages) == 2
    number = messages[0]["content"].removeprefix("question ")
    assert messages[1]["content"] == f"answer to question {number} in two parts"
    assert sorted(p.name for p in (env_state / "koala").iterdir()) == ["last", "last.jsonl"]
