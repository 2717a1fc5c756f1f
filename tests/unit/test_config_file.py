"""The config file: location, parsing, FILE:LINE errors, profile merging (koala_cli.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from koala_cli.config import Config, config_dir, config_path, load_config, resolve
from koala_cli.errors import UsageError


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(UsageError) as caught:
        load_config(path)
    assert caught.value.exit_status == 2
    return str(caught.value)


# -- where the file is ---------------------------------------------------------------


def test_koala_config_names_the_file() -> None:
    assert config_path({"KOALA_CONFIG": "/x/k.toml", "XDG_CONFIG_HOME": "/y"}) == Path("/x/k.toml")


def test_empty_koala_config_or_no_config_means_none() -> None:
    assert config_path({"KOALA_CONFIG": "", "HOME": "/h"}) is None
    assert config_path({"HOME": "/h"}, no_config=True) is None
    assert config_path({"KOALA_CONFIG": "/x/k.toml"}, no_config=True) is None


def test_xdg_config_home_then_home() -> None:
    assert config_path({"XDG_CONFIG_HOME": "/y", "HOME": "/h"}) == Path("/y/koala/config.toml")
    assert config_path({"HOME": "/h"}) == Path("/h/.config/koala/config.toml")
    # a relative XDG value is ignored, as the XDG spec says; never the current folder
    assert config_path({"XDG_CONFIG_HOME": "rel", "HOME": "/h"}) == Path("/h/.config/koala/config.toml")


def test_config_dir_follows_koala_config() -> None:
    assert config_dir({"KOALA_CONFIG": "/x/k.toml"}) == Path("/x")
    assert config_dir({"HOME": "/h"}) == Path("/h/.config/koala")


# -- reading ---------------------------------------------------------------------------


def test_missing_file_is_no_config(tmp_path: Path) -> None:
    assert load_config(tmp_path / "nope.toml") == Config()
    assert load_config(None) == Config()


def test_a_five_line_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[default]\nprofile = "local"\n\n[profiles.local]\nprovider = "openai"\n'
        'base_url = "http://127.0.0.1:11434"\nmodel = "llama3.2"\n',
    )
    config = load_config(path)
    assert config.default == {"profile": "local"}
    assert config.profiles["local"]["model"] == "llama3.2"
    resolved = resolve(config, None, {})
    assert resolved.profile == "local"
    assert resolved.settings["model"].value == "llama3.2"
    assert resolved.settings["model"].source == "[profiles.local]"
    assert resolved.settings["timeout"].source == "built-in"
    assert resolved.from_file() == {"provider": "openai", "base_url": "http://127.0.0.1:11434", "model": "llama3.2"}


def test_malformed_toml_is_file_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[default]\nmodel = "a"\ntimeout = = 3\n')
    message = error_of(path)
    assert message.startswith(f"{path}:3: ")
    assert "column" in message


def test_unterminated_at_end(tmp_path: Path) -> None:
    path = write(tmp_path, '[default]\nmodel = "a')
    assert error_of(path).startswith(f"{path}:2: ")


def test_a_utf8_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'\xef\xbb\xbf[profiles.x]\r\nmodel = "m"\r\n')
    assert load_config(path).profiles == {"x": {"model": "m"}}


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[default]\nmodel = "\xff"\n')
    assert error_of(path) == f"{path}:2: not valid UTF-8 (byte 19)"


def test_unreadable_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").mkdir()
    assert error_of(tmp_path / "config.toml").startswith(f"{tmp_path / 'config.toml'}: ")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[default]\nmodel = "a"\nmodle = "b"\n', 3, "unknown key 'modle' in [default]"),
        (
            '[default]\nmodel = "a"\n\n[profiles.x]\n\n  "temprature" = 1\n',
            6,
            "unknown key 'temprature' in [profiles.x]",
        ),
        ("[profiles.x]\nremember_last = false\n", 2, "only in [default]"),
        ('colour = "red"\n', 1, "unknown key 'colour'"),
        ('[defaults]\nmodel = "a"\n', 1, "unknown key 'defaults'"),
        ('[profiles]\nx.model = "m"\nx.bogus = 1\n', 3, "unknown key 'bogus' in [profiles.x]"),
        ('[profiles]\nx = { model = "m", bogus = 1 }\n', 2, "unknown key 'bogus'"),
        ('[default]\nsystem = """\nbogus = 1\n"""\nbogus = 2\n', 5, "unknown key 'bogus'"),
        ('[default]\ntimeout = "60"\n', 2, "timeout must be a positive number, not a string"),
        ("[default]\ntimeout = 0\n", 2, "timeout must be a positive number, not 0"),
        ("[default]\ntimeout = nan\n", 2, "timeout must be a positive number, not nan"),
        ("[default]\nretries = -1\n", 2, "retries must be an integer of 0 or more, not -1"),
        ('[default]\napi_key_cmd = ""\n', 2, "strings, not an empty string"),
        ('[default]\napi_key_cmd = ["a", 1]\n', 2, "strings, not an array holding an integer"),
        ('[default]\nweb_search = "yes"\n', 2, "web_search must be true or false"),
        ("[default]\napi_key_cmd = []\n", 2, "api_key_cmd must be a string or an array of strings, not an empty array"),
        ("[default]\napi_key_cmd = 'pass \"x'\n", 2, "cannot be split into words"),
        ('[default]\nbase_url = "ftp://x"\n', 2, "base_url must start with http:// or https://"),
        ('[default]\noptions = { model = "x" }\n', 2, "options cannot set 'model'"),
        ("profiles = 3\n", 1, "[profiles] must be a table"),
        ("[profiles]\nx = 3\n", 2, "[profiles.x] must be a table"),
        ('[default]\nprofile = "nope"\n[profiles.a]\n', 2, "unknown profile 'nope' (known: a)"),
    ],
)
def test_bad_keys_and_values_are_file_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, text)
    message = error_of(path)
    assert message.startswith(f"{path}:{line}: "), message
    assert words in message


# -- merging -----------------------------------------------------------------------------

CONFIG = """\
[default]
model = "m-default"
timeout = 30
options = { temperature = 0.5, seed = 1 }

[profiles.fast]
model = "m-fast"
options = { temperature = 0 }

[profiles.other]
retries = 0
"""


def test_precedence_env_profile_default_builtin(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CONFIG))
    fast = resolve(config, "fast", {})
    assert fast.settings["model"].value == "m-fast"
    assert fast.settings["timeout"].value == 30
    assert fast.settings["timeout"].source == "[default]"
    assert fast.settings["retries"].value == 3
    assert fast.settings["options"].value == {"temperature": 0, "seed": 1}
    other = resolve(config, "other", {"KOALA_MODEL": "m-env"})
    assert other.settings["model"].value == "m-env"
    assert other.settings["model"].source == "KOALA_MODEL"
    assert other.from_file() == {"timeout": 30, "options": {"temperature": 0.5, "seed": 1}, "retries": 0}


def test_no_profile_is_default_only(tmp_path: Path) -> None:
    resolved = resolve(load_config(write(tmp_path, CONFIG)), None, {})
    assert resolved.profile is None
    assert resolved.settings["model"].value == "m-default"


def test_unknown_profile_names_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    with pytest.raises(UsageError, match=r"unknown profile 'fats' \(known: fast, other\) in "):
        resolve(load_config(path), "fats", {})
    with pytest.raises(UsageError, match=r"unknown profile 'x' \(known: none.*\(no config file\)"):
        resolve(Config(), "x", {})


def test_no_last_from_the_environment(tmp_path: Path) -> None:
    assert resolve(Config(), None, {}).settings["remember_last"].value is True
    assert resolve(Config(), None, {"KOALA_NO_LAST": "1"}).settings["remember_last"].value is False
    assert resolve(Config(), None, {"KOALA_NO_LAST": "0"}).settings["remember_last"].value is True
    config = load_config(write(tmp_path, "[default]\nremember_last = false\n"))
    assert resolve(config, None, {}).settings["remember_last"].value is False


def test_privacy_follows_the_mode(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "[default]\n", 0o600)).private
    assert not load_config(write(tmp_path, "[default]\n", 0o644)).private
    assert not load_config(write(tmp_path, "[default]\n", 0o640)).private
