"""Issue 11: the config file and its profiles, end to end (`koala config`, -p, --no-config, keys)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from daily_helpers import Dirs, Koala, openai_sse
from standin import Script, StandIn, sse

FIVE_LINES = """\
[default]
profile = "local"
[profiles.local]
provider = "openai"
base_url = "{url}"
"""


def local_config(dirs: Dirs, server: StandIn, extra: str = "", mode: int = 0o600) -> Path:
    return dirs.write_config(FIVE_LINES.format(url=server.base_url) + extra, mode)


def test_a_five_line_config_then_just_ask(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    local_config(dirs, server, 'model = "llama3.2"\n')
    server.push(Script([openai_sse("Hi", " there")]))
    ran = koala("ask", "-p", "local", "hi")
    assert (ran.status, ran.out) == (0, "Hi there\n"), ran.err
    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.json()["model"] == "llama3.2"
    server.push(Script([openai_sse("again")]))
    assert koala("ask", "hi").status == 0  # [default] profile = "local"
    assert server.requests[1].json()["model"] == "llama3.2"


def test_command_line_beats_environment_beats_profile_beats_default(
    dirs: Dirs, koala: Koala, server: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs.write_config(
        f'[default]\nmodel = "m-default"\ntimeout = 7\nbase_url = "{server.base_url}"\n'
        '[profiles.p]\nmodel = "m-profile"\nsystem = "Be brief."\n'
    )
    ran = koala("ask", "--dry-run", "--json", "hi")
    assert json.loads(ran.out)["body"]["model"] == "m-default"
    ran = koala("ask", "--dry-run", "--json", "-p", "p", "hi")
    body = json.loads(ran.out)["body"]
    assert body["model"] == "m-profile"
    assert body["input"] == "hi Be brief."  # koala.sh: the system text after the prompt
    monkeypatch.setenv("KOALA_MODEL", "m-env")
    assert json.loads(koala("ask", "--dry-run", "--json", "-p", "p", "hi").out)["body"]["model"] == "m-env"
    assert (
        json.loads(koala("ask", "--dry-run", "--json", "-p", "p", "-m", "m-flag", "hi").out)["body"]["model"]
        == "m-flag"
    )
    monkeypatch.setenv("KOALA_PROFILE", "p")
    show = json.loads(koala("config", "show", "--json").out)
    assert show["profile"] == "p"
    assert show["settings"]["model"] == {"value": "m-env", "source": "KOALA_MODEL"}
    assert show["settings"]["timeout"] == {"value": 7, "source": "[default]"}
    assert show["settings"]["system"] == {"value": "Be brief.", "source": "[profiles.p]"}
    assert show["settings"]["retries"] == {"value": 3, "source": "built-in"}


def test_no_config_and_empty_koala_config_read_nothing(
    dirs: Dirs, koala: Koala, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs.write_config('[default]\nmodel = "from-file"\nbogus = 1\n')  # would be an error if read
    assert json.loads(koala("ask", "--no-config", "--dry-run", "--json", "hi").out)["body"]["model"] == "gpt-4o-mini"
    monkeypatch.setenv("KOALA_CONFIG", "")
    assert json.loads(koala("ask", "--dry-run", "--json", "hi").out)["body"]["model"] == "gpt-4o-mini"
    assert koala("config", "path").out == ""


def test_koala_config_names_the_file(dirs: Dirs, koala: Koala, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text('[profiles.x]\nmodel = "mx"\n[profiles.y]\n')
    monkeypatch.setenv("KOALA_CONFIG", str(other))
    assert koala("config", "path").out == f"{other}\n"
    assert koala("config", "profiles").out == "x\ny\n"
    assert json.loads(koala("ask", "-p", "x", "--dry-run", "--json", "hi").out)["body"]["model"] == "mx"


def test_config_profiles_lists_them_whatever_koala_profile_names(
    dirs: Dirs, koala: Koala, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command to find the right name works while KOALA_PROFILE holds a wrong one."""
    dirs.write_config('[profiles.alpha]\nmodel = "a"\n[profiles.beta]\n')
    monkeypatch.setenv("KOALA_PROFILE", "typo")
    listed = koala("config", "profiles")
    assert (listed.status, listed.out, listed.err) == (0, "alpha\nbeta\n", "")
    assert "unknown profile 'typo'" in koala("ask", "--dry-run", "hi").error_line()


def test_config_path_and_init(dirs: Dirs, koala: Koala, tmp_path: Path) -> None:
    assert koala("config", "path").out == f"{dirs.config / 'config.toml'}\n"
    assert koala("config", "profiles").out == ""  # no file: no profiles, no error
    template = koala("config", "init")
    assert template.status == 0 and "[profiles.local]" in template.out
    assert not (dirs.config / "config.toml").exists()  # printed, never written
    dirs.write_config(template.out)  # the template itself is a valid config
    assert koala("config", "profiles").out == "local\n"
    assert koala("config", "show").status == 0


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[default]\nmodel = "a"\nmodle = "b"\n', 3, "unknown key 'modle' in [default]"),
        ('[default]\nmodel = "a"\n[profiles.x]\ntimeout = -1\n', 4, "timeout must be a positive number"),
        ("[default\n", 1, "column"),
    ],
)
def test_a_bad_config_is_file_line_exit_2(dirs: Dirs, koala: Koala, text: str, line: int, words: str) -> None:
    path = dirs.write_config(text)
    for args in (
        ("ask", "hi"),
        ("chat",),
        ("batch", "--lines"),
        ("models",),
        ("config", "show"),
        ("config", "profiles"),
    ):
        ran = koala(*args, stdin=b"x\n")
        assert ran.status == 2, (args, ran.err)
        message = ran.error_line()
        assert message.startswith(f"{path}:{line}: ") and words in message, message
    assert koala("ask", "--help").status == 0  # help reads no config
    assert koala("config", "path").status == 0


def test_unknown_profile_names_the_known_ones(dirs: Dirs, koala: Koala, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs.write_config("[profiles.b]\n[profiles.a]\n")
    for args in (
        ("ask", "-p", "c", "hi"),
        ("chat", "-p", "c"),
        ("batch", "-p", "c"),
        ("models", "--profile", "c"),
        ("config", "show", "-p", "c"),
    ):
        ran = koala(*args)
        assert ran.status == 2
        assert ran.error_line().startswith("unknown profile 'c' (known: a, b)")
    monkeypatch.setenv("KOALA_PROFILE", "zz")
    assert "unknown profile 'zz'" in koala("ask", "hi").error_line()
    assert koala("ask", "-p", "a", "--dry-run", "hi").status == 0  # the flag wins over KOALA_PROFILE


def test_models_takes_the_profile_provider(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    server.push(Script([b'{"data": [{"id": "tiny"}]}'], headers={"Content-Type": "application/json"}))
    dirs.write_config(f'[profiles.o]\nprovider = "openai"\nbase_url = "{server.base_url}"\n')
    assert json.loads(koala("models", "-p", "o", "--json").out.splitlines()[0])["provider"] == "openai"
    assert server.requests[0].path == "/v1/models"


# -- keys ------------------------------------------------------------------------------------


def key_config(dirs: Dirs, server: StandIn, source: str, mode: int = 0o600) -> None:
    dirs.write_config(
        f'[profiles.k]\nprovider = "openai"\nmodel = "m"\nbase_url = "{server.base_url}"\n{source}\n', mode
    )


def test_api_key_cmd_runs_only_for_a_real_request(dirs: Dirs, koala: Koala, server: StandIn, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = f"open({str(marker)!r}, 'a').write('x'); print('sk-from-cmd')"
    key_config(dirs, server, f'api_key_cmd = [{json.dumps(sys.executable)}, "-c", {json.dumps(script)}]')
    dry = koala("ask", "-p", "k", "--dry-run", "hi")
    assert dry.status == 0 and "Authorization: Bearer ***" in dry.out and "sk-from-cmd" not in dry.out
    assert not marker.exists()
    assert koala("config", "show", "-p", "k").status == 0 and not marker.exists()
    server.push(Script([openai_sse("ok")]))
    assert koala("ask", "-p", "k", "hi").status == 0
    assert server.requests[0].headers["authorization"] == "Bearer sk-from-cmd"
    assert marker.read_text() == "x"


def test_a_failing_key_command_is_exit_2_naming_the_profile(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    script = "import sys; print('leaked-secret'); sys.exit(4)"
    key_config(dirs, server, f'api_key_cmd = [{json.dumps(sys.executable)}, "-c", {json.dumps(script)}]')
    ran = koala("ask", "-p", "k", "hi")
    assert ran.status == 2
    message = ran.error_line()
    assert "profile 'k'" in message and "exit status 4" in message
    assert "leaked-secret" not in ran.err + ran.out
    assert server.requests == []


def test_key_order_flag_provider_variable_api_key_env(
    dirs: Dirs, koala: Koala, server: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_config(dirs, server, 'api_key_env = "MY_KEY"\napi_key = "literal"')
    monkeypatch.setenv("MY_KEY", "from-my-key")
    for args, expected in (
        (("--api-key", "flag"), "flag"),
        ((), "from-my-key"),
    ):
        server.push(Script([openai_sse("ok")]))
        assert koala("ask", "-p", "k", *args, "hi").status == 0
        assert server.requests[-1].headers["authorization"] == f"Bearer {expected}"
    monkeypatch.setenv("OPENAI_API_KEY", "openai-var")
    server.push(Script([openai_sse("ok")]))
    assert koala("ask", "-p", "k", "hi").status == 0
    assert server.requests[-1].headers["authorization"] == "Bearer openai-var"
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("MY_KEY")
    server.push(Script([openai_sse("ok")]))
    assert koala("ask", "-p", "k", "hi").status == 0
    assert server.requests[-1].headers["authorization"] == "Bearer literal"


def test_a_literal_key_in_a_readable_file_is_refused(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    key_config(dirs, server, 'api_key = "sk-zz-secret"', mode=0o644)
    ran = koala("ask", "-p", "k", "hi")
    assert ran.status == 2
    assert "others may read it; run 'chmod 600" in ran.error_line()
    assert "sk-zz-secret" not in ran.err
    assert server.requests == []


def test_a_profile_key_never_goes_to_another_server(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    key_config(dirs, server, 'api_key = "literal"')
    other = StandIn().start()
    try:
        other.push(Script([openai_sse("ok")]))
        assert koala("ask", "-p", "k", "--base-url", other.base_url, "hi").status == 0
        assert "authorization" not in other.requests[0].headers
    finally:
        other.stop()


def test_config_show_masks_keys(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    key_config(dirs, server, 'api_key = "sk-very-secret"')
    for args in (("config", "show", "-p", "k"), ("config", "show", "-p", "k", "--json")):
        ran = koala(*args)
        assert ran.status == 0, ran.err
        assert "sk-very-secret" not in ran.out
        assert "[profiles.k] api_key" in ran.out


def test_koala_provider_with_a_koala_sh_default(dirs: Dirs, koala: Koala, server: StandIn) -> None:
    dirs.write_config(f'[default]\nbase_url = "{server.base_url}"\n')
    server.push(Script([sse("Hello")]))
    ran = koala("ask", "hi")
    assert (ran.status, ran.out) == (0, "Hello\n")


def test_chat_runs_the_key_command_only_before_its_first_message(
    dirs: Dirs, koala: Koala, server: StandIn, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    script = f"open({str(marker)!r}, 'a').write('x'); print('sk-chat')"
    key_config(dirs, server, f'api_key_cmd = [{json.dumps(sys.executable)}, "-c", {json.dumps(script)}]')
    assert koala("chat", "-p", "k", stdin=b"/help\n").status == 0
    assert not marker.exists()  # nothing was sent
    server.push(Script([openai_sse("a")]), Script([openai_sse("b")]))
    ran = koala("chat", "-p", "k", stdin=b"one\ntwo\n")
    assert ran.status == 0, ran.err
    assert marker.read_text() == "x"  # once for the whole chat
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer sk-chat"] * 2


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_koala_debug_off_reads_as_the_debug_option_reads_it(
    dirs: Dirs, koala: Koala, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """KOALA_DEBUG=0 is --debug off, as Typer reads the variable for the option: a bad config
    is still the one line, not a traceback."""
    dirs.write_config("[default\n")
    monkeypatch.setenv("KOALA_DEBUG", value)
    ran = koala("ask", "hi")
    assert ran.status == 2
    assert ran.err.count("\n") == 1 and "Traceback" not in ran.err, ran.err


@pytest.mark.parametrize(("value", "traceback"), [("0", False), ("off", False), ("", False), ("1", True)])
def test_koala_debug_decides_the_traceback_of_a_system_failure(
    koala: Koala, monkeypatch: pytest.MonkeyPatch, value: str, traceback: bool
) -> None:
    """The system refusing something (no file descriptor left) is one line, with a traceback
    only when KOALA_DEBUG is on as the --debug option reads it."""
    import errno

    from koala_cli import roles

    def exhausted(folder: object) -> list[str]:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(roles, "list_roles", exhausted)
    monkeypatch.setenv("KOALA_DEBUG", value)
    ran = koala("roles")
    assert ran.status == 1
    assert ran.err.rstrip().endswith("koala: error: Too many open files (see 'ulimit -n')")
    assert ("Traceback" in ran.err) is traceback, ran.err


def test_a_prompt_word_after_double_dash_is_not_the_debug_option() -> None:
    from koala_cli.cli import debug_option_given

    assert debug_option_given(["ask", "--debug", "hi"])
    assert not debug_option_given(["ask", "--", "--debug"])
    assert not debug_option_given(["ask", "hi"])
