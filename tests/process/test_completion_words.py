"""Issue 11: completion offers profile names after -p, role names after -r and the server's
models after -m, from koala itself (a short time limit; the models cached).  A real bash runs
the completion script, which runs the real `koala`: these are process tests.  So do a real zsh
(its completion system, with compadd stubbed to print what it is given) and a real fish
(`complete -C`), each skipped where that shell is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_koala
from daily_helpers import Dirs
from standin import Script, StandIn

pytestmark = [pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")]


def _path() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def complete(script: Path, *words: str) -> list[str]:
    program = (
        f'source "{script}"; COMP_WORDS=(koala {" ".join(repr(w) for w in words)}); '
        f"COMP_CWORD={len(words)}; _koala; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    env = _path()
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().split()


# zsh: the completion system's own entry for koala (bashcompinit's _bash_complete, as <TAB> calls
# it), with the words, CURRENT and PREFIX a <TAB> would set; compadd, which only works inside a
# completion widget, prints the matches it is given that start with PREFIX, as it would offer them.
_ZSH = """autoload -Uz compinit && compinit -u -D && source "$1" || exit 9
compadd() { print -rl -- "${(@M)${(@P)${@[-1]}}:#${(b)PREFIX}*}"; }
compset() { return 1; }
words=(koala "${@[2,-1]}"); CURRENT=$#words; PREFIX=${words[-1]}
${=_comps[koala]}
"""


def zsh_complete(script: Path, *words: str, cwd: Path | None = None) -> list[str]:
    result = subprocess.run(
        ["zsh", "-f", "-c", _ZSH, "zsh", str(script), *words], capture_output=True, timeout=60, env=_path(), cwd=cwd
    )
    assert result.returncode in (0, 1), result.stderr  # 1: no matches
    assert result.stderr == b""
    return result.stdout.decode().split()


def fish_complete(script: Path, *words: str, cwd: Path | None = None) -> list[str]:
    """What `complete -C` offers for the command line `koala WORDS` (descriptions dropped)."""
    program = 'source $argv[1]; or exit 9; complete -C "koala $argv[2]"'
    result = subprocess.run(
        ["fish", "--no-config", "-c", program, str(script), " ".join(words)],
        capture_output=True,
        timeout=60,
        env=_path(),
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    return [line.split("\t")[0] for line in result.stdout.decode().splitlines()]


needs_zsh = pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")
needs_fish = pytest.mark.skipif(shutil.which("fish") is None, reason="needs fish")


@pytest.fixture
def script(tmp_path: Path, dirs: Dirs) -> Path:
    path = tmp_path / "koala.bash"
    path.write_bytes(run_koala("completion", "bash").stdout)
    return path


def script_for(shell: str, folder: Path) -> Path:
    path = folder / f"koala.{shell}"
    path.write_bytes(run_koala("completion", shell).stdout)
    return path


SHELLS: dict[str, Callable[..., list[str]]] = {"bash": complete, "zsh": zsh_complete, "fish": fish_complete}


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
    assert "-s p -l profile -x -a '(__koala_words profiles)'" in fish
    assert "-s m -l model -x -a '(__koala_words models)'" in fish
    assert "function __koala_words" in fish


def _alpha_and_beta(dirs: Dirs) -> None:
    dirs.write_config("[profiles.alpha]\n[profiles.beta]\n")
    (dirs.config / "roles").mkdir()
    (dirs.config / "roles" / "reviewer.md").write_text("Review.")
    (dirs.config / "roles" / "shell.md").write_text("Shell.")


@pytest.mark.parametrize("shell", [pytest.param("zsh", marks=needs_zsh), pytest.param("fish", marks=needs_fish)])
def test_zsh_and_fish_offer_profiles_roles_and_models(tmp_path: Path, dirs: Dirs, shell: str) -> None:
    """The script's own variables must not be the shell's (zsh: a local `path` is $PATH,
    emptied); after -p, -r and -m, names only (as bash): a file there is not one of them."""
    complete = SHELLS[shell]
    script = script_for(shell, tmp_path)
    _alpha_and_beta(dirs)
    (tmp_path / "notes.txt").write_text("")
    assert complete(script, "ask", "-p", "", cwd=tmp_path) == ["alpha", "beta"]
    assert complete(script, "chat", "--profile", "b", cwd=tmp_path) == ["beta"]
    assert complete(script, "ask", "-r", "", cwd=tmp_path) == ["reviewer", "shell"]
    models = complete(script, "ask", "-m", "", cwd=tmp_path)
    assert "gpt-4o" in models
    assert (dirs.cache / "models.txt").is_file()
    if shell == "zsh":
        assert zsh_complete(script, "as", cwd=tmp_path) == ["ask"]
        assert zsh_complete(script, "ask", "--js", cwd=tmp_path) == ["--json"]
        assert zsh_complete(script, "ask", "-H", "no", cwd=tmp_path) == ["notes.txt"]
    else:
        assert "notes.txt" not in models
        assert fish_complete(script, "ask", "-H", "no", cwd=tmp_path) == ["notes.txt"]
        assert fish_complete(script, "models", "--provider", "", cwd=tmp_path) == ["koala", "openai"]


@pytest.mark.parametrize(
    "shell",
    [
        "bash",
        pytest.param("zsh", marks=needs_zsh),
        pytest.param("fish", marks=needs_fish),
    ],
)
def test_models_after_a_profile_come_from_its_server(
    shell: str, tmp_path: Path, dirs: Dirs, server: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """-m after -p alpha: `koala models --profile alpha`, cached apart (models-alpha.txt), in every shell."""
    monkeypatch.chdir(tmp_path)
    server.push(Script([b'{"data": [{"id": "m1"}, {"id": "m2"}]}'], headers={"Content-Type": "application/json"}))
    dirs.write_config(f'[profiles.alpha]\nprovider = "openai"\nbase_url = "{server.base_url}"\n[profiles.beta]\n')
    script = script_for(shell, tmp_path)
    assert SHELLS[shell](script, "ask", "-p", "alpha", "-m", "") == ["m1", "m2"]
    assert [r.path for r in server.requests] == ["/v1/models"]
    assert (dirs.cache / "models-alpha.txt").read_text().split() == ["m1", "m2"]
    assert not (dirs.cache / "models.txt").exists()
    (dirs.cache / "models-alpha.txt").write_text("from-the-cache\n")
    assert SHELLS[shell](script, "ask", "-p", "alpha", "-m", "") == ["from-the-cache"]
    assert "m1" not in SHELLS[shell](script, "ask", "-p", "beta", "-m", "")
