"""Issue 11: --log FILE / KOALA_LOG / the config's log: one JSON line per request."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from daily_helpers import Dirs, Koala, openai_sse
from standin import Script, StandIn, sse


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def test_one_line_per_ask(koala: Koala, server: StandIn, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    server.push(Script([sse("Hello")]))
    ran = koala("ask", "--base-url", server.base_url, "--log", str(log), "-s", "sys", "hi there")
    assert ran.status == 0, ran.err
    (record,) = records(log)
    assert set(record) == {
        "time",
        "command",
        "profile",
        "provider",
        "model",
        "host",
        "chars_in",
        "chars_out",
        "usage",
        "ms",
        "exit_status",
    }
    assert record["command"] == "ask" and record["provider"] == "koala" and record["model"] == "gpt-4o-mini"
    assert record["host"] == server.base_url.removeprefix("http://")
    assert (record["chars_in"], record["chars_out"], record["exit_status"]) == (len("hi there") + 3, 5, 0)
    assert isinstance(record["ms"], float) and str(record["time"]).endswith("Z")
    assert "prompt" not in record
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_prompts_only_when_asked_and_failures_too(koala: Koala, server: StandIn, tmp_path: Path) -> None:
    log = tmp_path / "log"
    server.push(Script([b"no"], status=500, reason="Internal Server Error"))
    ran = koala("ask", "--base-url", server.base_url, "--retries", "0", "--log", str(log), "--log-prompts", "secret q")
    assert ran.status == 4
    (record,) = records(log)
    assert record["prompt"] == "secret q" and record["exit_status"] == 4 and record["chars_out"] == 0


def test_koala_log_and_the_config(
    dirs: Dirs, koala: Koala, server: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs.write_config(
        f'[default]\nlog = "{tmp_path / "from-config.jsonl"}"\n[profiles.local]\nprovider = "openai"\n'
        f'base_url = "{server.base_url}"\n'
    )
    server.push(Script([openai_sse("a")]), Script([openai_sse("b")]))
    assert koala("ask", "-p", "local", "-m", "m1", "q").status == 0
    (record,) = records(tmp_path / "from-config.jsonl")
    assert (record["profile"], record["provider"], record["model"]) == ("local", "openai", "m1")
    monkeypatch.setenv("KOALA_LOG", str(tmp_path / "from-env.jsonl"))
    assert koala("ask", "-p", "local", "-m", "m1", "q").status == 0
    assert len(records(tmp_path / "from-env.jsonl")) == 1
    assert len(records(tmp_path / "from-config.jsonl")) == 1


def test_chat_and_batch_log_each_request(koala: Koala, server: StandIn, tmp_path: Path) -> None:
    log = tmp_path / "log"
    server.push(Script([sse("1")]), Script([sse("2")]))
    assert koala("chat", "--base-url", server.base_url, "--log", str(log), stdin=b"a\nb\n").status == 0
    assert [r["command"] for r in records(log)] == ["chat", "chat"]
    server.push(Script([sse("x")]), Script([sse("y")]))
    jobs = b'{"id": 1, "prompt": "p1"}\nnot json\n{"id": 2, "prompt": "p2", "model": "m2"}\n'
    ran = koala("batch", "--base-url", server.base_url, "--log", str(log), "--log-prompts", stdin=jobs)
    assert ran.status == 2  # the bad line
    batch = [r for r in records(log) if r["command"] == "batch"]
    assert sorted(str(r["prompt"]) for r in batch) == ["p1", "p2"]  # the bad line sent nothing
    assert {r["model"] for r in batch} == {"gpt-4o-mini", "m2"}


@pytest.mark.parametrize("where", ["folder", "missing-folder"])
def test_a_bad_log_is_exit_2_before_any_request(koala: Koala, server: StandIn, tmp_path: Path, where: str) -> None:
    path = tmp_path if where == "folder" else tmp_path / "no" / "log"
    for args in (("ask", "hi"), ("chat",), ("batch", "--lines")):
        ran = koala(args[0], "--base-url", server.base_url, "--log", str(path), *args[1:], stdin=b"x\n")
        assert ran.status == 2 and ran.error_line().startswith(f"--log {path}")
    assert server.requests == []


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    """The lock and the single write: many processes appending at once give whole lines."""
    log = tmp_path / "log"
    code = (
        "import sys, pathlib; from koala_cli.requestlog import append_record\n"
        "for i in range(200): append_record(pathlib.Path(sys.argv[1]), {'n': sys.argv[2], 'pad': 'x' * 5000})"
    )
    runs = [subprocess.Popen([sys.executable, "-c", code, str(log), str(n)]) for n in range(4)]
    for run in runs:
        assert run.wait(timeout=120) == 0
    lines = records(log)
    assert len(lines) == 800 and all(len(str(r["pad"])) == 5000 for r in lines)


def test_without_fcntl_one_line_no_traceback(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "from koala_cli.cli import main\n"
        "main(['ask', '--no-config', '-H', sys.argv[1], 'hi'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "h.jsonl")], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stderr == b"koala: error: this system has no fcntl (file locking); koala needs Linux, macOS or WSL\n"
