"""In-process runs of `koala` for the issue-11 tests: the real entry point (`koala_cli.cli.main`),
stdin from bytes, stdout and stderr captured at the file descriptors, the config, state and
cache folders under the test's tmp_path."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hypothesis  # noqa: F401 - loaded now: loaded first at the summary, after an in-process
import pytest  # run imported anyio, its trio plugin's warning is an error there


@dataclass
class Ran:
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode()

    @property
    def err(self) -> str:
        return self.stderr.decode()

    def error_line(self) -> str:
        """The one `koala: error:` line of a failed run (no traceback, nothing else), without
        its `koala: error: `."""
        from conftest import one_line_error

        return one_line_error(self.stderr).removeprefix("koala: error: ")


Koala = Callable[..., Ran]


@dataclass
class Dirs:
    config: Path  # the koala folder under XDG_CONFIG_HOME
    state: Path  # the koala folder under XDG_STATE_HOME
    cache: Path

    def write_config(self, text: str, mode: int = 0o600) -> Path:
        self.config.mkdir(parents=True, exist_ok=True)
        path = self.config / "config.toml"
        path.write_text(text, encoding="utf-8")
        path.chmod(mode)
        return path


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Dirs:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("VISUAL", "EDITOR", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return Dirs(tmp_path / "config" / "koala", tmp_path / "state" / "koala", tmp_path / "cache" / "koala")


@pytest.fixture
def koala(dirs: Dirs, monkeypatch: pytest.MonkeyPatch, capfdbinary: pytest.CaptureFixture[bytes]) -> Koala:
    """Run `koala ARGS...` in this process; stdin is ``stdin`` bytes (never a terminal)."""

    def run(*args: str, stdin: bytes = b"") -> Ran:
        from koala_cli.cli import main

        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capfdbinary.readouterr()
        status = 0
        try:
            main(list(args))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
        out, err = capfdbinary.readouterr()
        return Ran(status, out, err)

    return run


def openai_sse(*texts: str, usage: dict[str, int] | None = None, finish: str | None = "stop") -> bytes:
    """An OpenAI-style stream: delta chunks, a finish reason, optional usage, [DONE]."""
    import json

    events = [{"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]} for t in texts]
    if finish is not None:
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage is not None:
        events.append({"choices": [], "usage": usage})
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return body + b"data: [DONE]\n\n"


def env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}
