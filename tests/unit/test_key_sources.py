"""Where the API key comes from (koala_cli.keys): the order, the server binding, the command."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

from koala_cli.config import Config, load_config, resolve
from koala_cli.errors import UsageError
from koala_cli.keys import choose_key, run_key_command

CONFIG = """\
[profiles.groq]
provider = "openai"
base_url = "https://api.groq.example/openai"
api_key_env = "GROQ_KEY"
api_key_cmd = ["{python}", "-c", "print('  from-command  ')"]

[profiles.lit]
provider = "openai"
base_url = "http://127.0.0.1:9"
api_key = "literal-key"
"""


def config(tmp_path: Path, mode: int = 0o600) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.replace("{python}", sys.executable.replace("\\", "/")), encoding="utf-8")
    path.chmod(mode)
    return load_config(path)


def key(
    tmp_path: Path,
    profile: str,
    env: dict[str, str],
    *,
    flag: str | None = None,
    base_url: str | None = None,
    mode: int = 0o600,
) -> tuple[str, str | None]:
    resolved = resolve(config(tmp_path, mode), profile, env)
    url = base_url if base_url is not None else str(resolved.value("base_url"))
    source = choose_key(
        resolved, flag=flag, env=env, provider_variable="OPENAI_API_KEY", provider="openai", base_url=url
    )
    return source.describe, source.get()


def test_flag_wins(tmp_path: Path) -> None:
    assert key(tmp_path, "groq", {"OPENAI_API_KEY": "o", "GROQ_KEY": "g"}, flag="f") == ("--api-key", "f")


def test_provider_variable_then_api_key_env(tmp_path: Path) -> None:
    assert key(tmp_path, "groq", {"OPENAI_API_KEY": "o", "GROQ_KEY": "g"}) == ("OPENAI_API_KEY", "o")
    assert key(tmp_path, "groq", {"GROQ_KEY": "g"}) == ("GROQ_KEY ([profiles.groq] api_key_env)", "g")


def test_then_the_command_its_output_stripped(tmp_path: Path) -> None:
    assert key(tmp_path, "groq", {}) == ("[profiles.groq] api_key_cmd", "from-command")


def test_literal_needs_a_private_file(tmp_path: Path) -> None:
    assert key(tmp_path, "lit", {}) == ("[profiles.lit] api_key", "literal-key")
    with pytest.raises(UsageError, match=r"others may read it; run 'chmod 600 .*profile 'lit'"):
        key(tmp_path, "lit", {}, mode=0o644)


def test_a_profile_key_only_goes_to_its_server(tmp_path: Path) -> None:
    assert key(tmp_path, "groq", {"GROQ_KEY": "g"}, base_url="http://elsewhere.example") == ("none", None)
    assert key(tmp_path, "lit", {}, base_url="http://127.0.0.1:9/") == ("[profiles.lit] api_key", "literal-key")


def test_the_command_does_not_run_until_asked(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    argv = (sys.executable, "-c", f"open({str(marker)!r}, 'w').write('x'); print('k')")
    from koala_cli.keys import KeySource

    source = KeySource("cmd", command=argv, owner="profile 'x'")
    assert not marker.exists()
    assert source.get() == "k"
    assert marker.exists()


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("import sys; print('secret-output'); sys.exit(3)", "failed with exit status 3"),
        ("pass", "printed no key"),
        ("print('a\\tb')", "not a key"),
    ],
)
def test_command_failures_name_the_profile_never_the_output(code: str, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        run_key_command((sys.executable, "-c", code), "profile 'groq'")
    message = str(caught.value)
    assert caught.value.exit_status == 2
    assert "profile 'groq'" in message and words in message
    assert "secret-output" not in message


def test_command_not_found(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"api_key_cmd of profile 'g' \(.*\): command not found"):
        run_key_command((str(tmp_path / "no-such-tool"),), "profile 'g'")


def test_command_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("koala_cli.keys.KEY_COMMAND_SECONDS", 0.2)
    with pytest.raises(UsageError, match=r"did not finish within 0.2 s"):
        run_key_command((sys.executable, "-c", "import time; time.sleep(30)"), "profile 'slow'")


def test_a_string_command_is_split_without_a_shell(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[default]\napi_key_cmd = \"{sys.executable} -c 'print(1+1)' ; echo no\"\n", encoding="utf-8")
    resolved = resolve(load_config(path), None, {})
    source = choose_key(resolved, flag=None, env={}, provider_variable="KOALA_API_KEY", provider="koala", base_url=None)
    assert source.get() == "2"  # `; echo no` became arguments of the script: a shell would print "no" too


def test_endless_output_is_not_a_key_and_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key is a line: a command that prints without end is stopped at 64 KiB, not read
    until memory runs out (or until the time limit, which here would be an hour)."""
    monkeypatch.setattr("koala_cli.keys.KEY_COMMAND_SECONDS", 3600.0)
    endless = "import sys\nwhile True: sys.stdout.write('k' * 65536)"
    with pytest.raises(UsageError, match=r"printed more than 64 KiB: not a key \(not shown\)"):
        run_key_command((sys.executable, "-c", endless), "profile 'loud'")


def test_a_command_that_ends_but_leaves_its_output_open_still_times_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os
    import signal

    monkeypatch.setattr("koala_cli.keys.KEY_COMMAND_SECONDS", 0.3)
    pid_file = tmp_path / "pid"
    # a child that holds the output open after the command ends (stopped below: sh writes its
    # pid at once, long before koala gives up)
    leaves = 'sleep 60 & echo $! > "$1"'
    try:
        with pytest.raises(UsageError, match=r"did not finish within 0.3 s"):
            run_key_command(("sh", "-c", leaves, "sh", str(pid_file)), "profile 'leaves'")
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_an_interrupt_while_the_command_runs_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while a key command runs stops it, as subprocess.run did: a password manager
    left waiting on the terminal would outlive koala."""
    import os
    import signal

    from koala_cli import keys

    real = keys._read_by
    seen: list[bytes] = []

    def interrupted_after_the_first_line(*args: object) -> bytes:
        if seen:
            raise KeyboardInterrupt
        seen.append(real(*args))  # type: ignore[arg-type]
        return seen[0]

    monkeypatch.setattr(keys, "_read_by", interrupted_after_the_first_line)
    with pytest.raises(KeyboardInterrupt):
        run_key_command(("sh", "-c", "echo $$; exec sleep 60"), "profile 'waits'")
    pid = int(seen[0])
    try:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
