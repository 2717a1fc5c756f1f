"""Issue 11: completion offers profile names after -p, role names after -r and the server's
models after -m, from koala itself (a short time limit; the models cached).  A real bash runs
the completion script, which runs the real `koala`: these are process tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_koala
from daily_helpers import Dirs
from standin import Script, StandIn

pytestmark = [pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")]


def complete(script: Path, *words: str) -> list[str]:
    program = (
        f'source "{script}"; COMP_WORDS=(koala {" ".join(repr(w) for w in words)}); '
        f"COMP_CWORD={len(words)}; _koala; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().split()


@pytest.fixture
def script(tmp_path: Path, dirs: Dirs) -> Path:
    path = tmp_path / "koala.bash"
    path.write_bytes(run_koala("completion", "bash").stdout)
    return path


def test_profiles_roles_and_groups(script: Path, dirs: Dirs) -> None:
    dirs.write_config("[profiles.local]\n[profiles.groq]\n")
    (dirs.config / "roles").mkdir()
    (dirs.config / "roles" / "reviewer.md").write_text("Review.")
    (dirs.config / "roles" / "shell.md").write_text("Shell.")
    assert complete(script, "ask", "-p", "") == ["local", "groq"]
    assert complete(script, "chat", "--profile", "l") == ["local"]
    assert complete(script, "ask", "-r", "") == ["reviewer", "shell"]
    assert sorted(complete(script, "config", "")) == ["init", "path", "profiles", "show"]
    assert complete(script, "config", "show", "--j") == ["--json"]


def test_models_come_from_koala_models_and_are_cached(script: Path, dirs: Dirs, server: StandIn) -> None:
    server.push(Script([b'{"data": [{"id": "tiny"}, {"id": "big"}]}'], headers={"Content-Type": "application/json"}))
    dirs.write_config(f'[profiles.o]\nprovider = "openai"\nbase_url = "{server.base_url}"\n')
    first = complete(script, "ask", "-p", "o", "-m", "")
    assert first == ["tiny", "big"]
    assert [r.path for r in server.requests] == ["/v1/models"]
    cached = dirs.cache / "models-o.txt"
    assert cached.read_text().split() == first
    cached.write_text("from-the-cache\n")
    assert complete(script, "ask", "-p", "o", "-m", "") == ["from-the-cache"]


def test_a_broken_config_offers_nothing_quietly(script: Path, dirs: Dirs) -> None:
    dirs.write_config("[profiles.x\n")
    assert complete(script, "ask", "-p", "") == []


def test_fish_offers_the_same_words() -> None:
    fish = run_koala("completion", "fish").stdout.decode()
    assert "-s p -l profile -r -a '(__koala_words profiles)'" in fish
    assert "-s m -l model -r -a '(__koala_words models)'" in fish
    assert "function __koala_words" in fish
