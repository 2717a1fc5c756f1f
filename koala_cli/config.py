"""The config file: where it is, what it may hold, and the settings a profile gives.

One TOML file, read with ``tomllib``, never written by koala::

    [default]
    profile = "local"             # the profile used without -p
    remember_last = true          # keep the last conversation for `koala ask -c`

    [profiles.local]
    provider = "openai"
    base_url = "http://127.0.0.1:11434"
    model = "llama3.2"
    options = { temperature = 0.2 }

Precedence, highest first: the command line, ``KOALA_*`` variables, the profile,
``[default]``, the built-in defaults.  A malformed file or an unknown key is a
``UsageError`` reading ``FILE:LINE: why``.  Stdlib only; the front end passes the
environment in, so nothing here reads ``os.environ``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .tomlwhere import Where, decode, locator, toml_reason
from .userfile import read_bytes

__all__ = [
    "BUILTIN",
    "Config",
    "Setting",
    "config_path",
    "load_config",
    "resolve",
]

# Settings a profile (and [default]) may hold, and what each must be.
_PROFILE_KEYS: dict[str, str] = {
    "provider": "a string",
    "base_url": "a string",
    "model": "a string",
    "timeout": "a positive number",
    "max_time": "a positive number",
    "retries": "an integer of 0 or more",
    "proxy": "a string",
    "web_search": "true or false",
    "api_key_env": "a string",
    "api_key_cmd": "a string or an array of strings",
    "api_key": "a string",
    "options": "a table",
    "system": "a string",
    "stream_usage": "true or false",
}
# Settings only [default] may hold.
_DEFAULT_KEYS: dict[str, str] = {
    "profile": "a string",
    "remember_last": "true or false",
    "log": "a string",
    "log_prompts": "true or false",
}
#: The built-in defaults, the last in the precedence.
BUILTIN: dict[str, object] = {
    "provider": "koala",
    "model": "gpt-4o-mini",
    "timeout": 60.0,
    "retries": 3,
    "web_search": False,
    "stream_usage": False,
    "remember_last": True,
    "log_prompts": False,
}
#: The environment variables that set a setting (they rank above the file).
ENVIRONMENT: dict[str, str] = {
    "model": "KOALA_MODEL",
    "provider": "KOALA_PROVIDER",
    "base_url": "KOALA_BASE_URL",
    "log": "KOALA_LOG",
}
# Sampling option names that would break the request itself.
RESERVED_OPTIONS = {"model": "-m/--model", "messages": "the prompt", "stream": "nothing (koala always streams)"}


@dataclass(frozen=True)
class Config:
    """A parsed and validated config file (or none: ``path`` None, no tables)."""

    path: Path | None = None
    default: Mapping[str, object] = field(default_factory=dict)
    profiles: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    private: bool = True  # readable by its owner only, so a literal api_key may be used


@dataclass(frozen=True)
class Setting:
    """A setting's value and where it came from (``[profiles.x]``, ``[default]``, ``built-in``,
    an environment variable's name, or ``command line``)."""

    value: object
    source: str


def config_path(env: Mapping[str, str], *, no_config: bool = False) -> Path | None:
    """``$KOALA_CONFIG``, else ``$XDG_CONFIG_HOME/koala/config.toml``, else
    ``~/.config/koala/config.toml``; None with ``--no-config`` or ``KOALA_CONFIG=`` (empty)."""
    if no_config:
        return None
    explicit = env.get("KOALA_CONFIG")
    if explicit is not None:
        return Path(explicit).expanduser() if explicit else None
    return config_dir(env) / "config.toml"


def config_dir(env: Mapping[str, str]) -> Path:
    """The folder of the config file (and of ``roles/``)."""
    explicit = env.get("KOALA_CONFIG")
    if explicit:
        return Path(explicit).expanduser().parent
    base = env.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):  # the XDG rule: a relative value is ignored
        base = os.path.join(_home(env), ".config")
    return Path(base) / "koala"


def _home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def load_config(path: Path | None) -> Config:
    """The file at ``path`` parsed and checked; a missing file (or None) is no config."""
    if path is None:
        return Config()
    try:
        data = read_bytes(path)  # never a device: KOALA_CONFIG=/dev/zero is refused
        info = path.stat()
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    text = decode(data, path)
    import tomllib

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(toml_reason(str(exc), text, path)) from None
    except RecursionError:  # deeper than Python's recursion limit
        raise UsageError(f"{path}: nested too deeply") from None
    where = locator(text, path)
    default, profiles = _check(document, where)
    private = (info.st_mode & 0o077) == 0 and (not hasattr(os, "getuid") or info.st_uid == os.getuid())
    return Config(path=path, default=default, profiles=profiles, private=private)


def _check(document: dict[str, object], where: Where) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    for key in document:
        if key not in ("default", "profiles"):
            raise UsageError(f"{where(key)}: unknown key {key!r} (settings go in [default] or [profiles.NAME])")
    default = _table(document.get("default", {}), ("default",), where)
    _check_settings(default, ("default",), {**_PROFILE_KEYS, **_DEFAULT_KEYS}, where)
    profiles_table = _table(document.get("profiles", {}), ("profiles",), where)
    profiles: dict[str, dict[str, object]] = {}
    for name, value in profiles_table.items():
        profile = _table(value, ("profiles", name), where)
        _check_settings(profile, ("profiles", name), _PROFILE_KEYS, where)
        profiles[name] = profile
    chosen = default.get("profile")
    if chosen is not None and chosen not in profiles:
        raise UsageError(f"{where('default', 'profile')}: {unknown_profile(str(chosen), profiles)}")
    return default, profiles


def _not_json(value: object) -> str | None:
    """What in a TOML value JSON cannot carry to a server, if anything."""
    if isinstance(value, float) and not math.isfinite(value):
        return "no NaN or infinity"
    if isinstance(value, (list, dict)):
        items = value.values() if isinstance(value, dict) else value
        return next((problem for item in items if (problem := _not_json(item)) is not None), None)
    if not isinstance(value, (str, int, float, bool)):
        return "no dates or times"
    return None


def _table(value: object, key: tuple[str, ...], where: Where) -> dict[str, object]:
    if not isinstance(value, dict):
        raise UsageError(f"{where(*key)}: [{'.'.join(key)}] must be a table, not {_kind(value)}")
    return value


def _check_settings(table: dict[str, object], name: tuple[str, ...], allowed: dict[str, str], where: Where) -> None:
    title = f"[{'.'.join(name)}]"
    for key, value in table.items():
        if key not in allowed:
            hint = " (only in [default])" if key in _DEFAULT_KEYS else ""
            raise UsageError(f"{where(*name, key)}: unknown key {key!r} in {title}{hint}")
        if not _valid(key, value):
            raise UsageError(f"{where(*name, key)}: {key} must be {allowed[key]}, not {_described(value)}")
        if key in ("base_url", "proxy") and not str(value).lower().startswith(_SCHEMES[key]):
            raise UsageError(f"{where(*name, key)}: {key} must start with {' or '.join(_SCHEMES[key])}")
        if key == "options":
            assert isinstance(value, dict)
            for option, setting in value.items():
                if option in RESERVED_OPTIONS:
                    raise UsageError(
                        f"{where(*name, key)}: options cannot set {option!r} (use {RESERVED_OPTIONS[option]})"
                    )
                if (problem := _not_json(setting)) is not None:
                    raise UsageError(f"{where(*name, key)}: options.{option} must be JSON ({problem})")
        if key == "api_key_cmd" and isinstance(value, str):
            import shlex

            try:
                shlex.split(value)
            except ValueError as exc:
                raise UsageError(f"{where(*name, key)}: api_key_cmd cannot be split into words: {exc}") from None


_SCHEMES = {"base_url": ("http://", "https://"), "proxy": ("http://", "https://", "socks5://", "socks5h://")}


def _valid(key: str, value: object) -> bool:
    if key in ("timeout", "max_time"):
        return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf")
    if key == "retries":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if key in ("web_search", "stream_usage", "remember_last", "log_prompts"):
        return isinstance(value, bool)
    if key == "options":
        return isinstance(value, dict)
    if key == "api_key_cmd":
        if isinstance(value, list):
            return bool(value) and all(isinstance(word, str) for word in value)
        return isinstance(value, str) and bool(value.strip())
    return isinstance(value, str)


def _described(value: object) -> str:
    """A wrong value as a message names it: a number by its value (``timeout = 0``: "not 0",
    not "not an integer"), an empty string or array as empty, else by its kind."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    if isinstance(value, str) and not value.strip():
        return "an empty string"
    if isinstance(value, list) and not value:
        return "an empty array"
    if isinstance(value, list):
        odd = next((item for item in value if not isinstance(item, str)), None)
        return f"an array holding {_kind(odd)}" if odd is not None else "an array"
    return _kind(value)


def _kind(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def unknown_profile(name: str, profiles: Mapping[str, object]) -> str:
    known = ", ".join(sorted(profiles)) or "none: the config file defines no [profiles.NAME]"
    return f"unknown profile {name!r} (known: {known})"


@dataclass(frozen=True)
class Resolved:
    """The settings of one run before the command line: the profile's name and every setting
    from the environment, the profile, ``[default]`` and the built-ins."""

    profile: str | None
    settings: Mapping[str, Setting]
    config: Config

    def value(self, key: str) -> object:
        setting = self.settings.get(key)
        return None if setting is None else setting.value

    def from_file(self) -> dict[str, object]:
        """The settings the file gives (for Click's ``default_map``: it ranks them below the
        command line and the environment)."""
        return {k: s.value for k, s in self.settings.items() if s.source.startswith("[")}


def resolve(config: Config, profile: str | None, env: Mapping[str, str]) -> Resolved:
    """Merge built-ins < ``[default]`` < the profile < the environment.

    ``profile`` is the name asked for (``-p`` or ``KOALA_PROFILE``); None takes
    ``[default].profile``, if any.  ``options`` tables are merged key by key.
    """
    if profile is None:
        chosen = config.default.get("profile")
        profile = chosen if isinstance(chosen, str) else None
    elif profile not in config.profiles:
        where = f" in {config.path}" if config.path is not None else " (no config file)"
        raise UsageError(unknown_profile(profile, config.profiles) + where)
    settings: dict[str, Setting] = {k: Setting(v, "built-in") for k, v in BUILTIN.items()}
    layers: list[tuple[str, Mapping[str, object]]] = [("[default]", config.default)]
    if profile is not None:
        layers.append((f"[profiles.{profile}]", config.profiles[profile]))
    for source, table in layers:
        for key, value in table.items():
            if key == "profile":
                continue
            if key == "options" and "options" in settings:
                earlier = settings["options"].value
                assert isinstance(earlier, dict) and isinstance(value, dict)
                settings[key] = Setting({**earlier, **value}, source)
            else:
                settings[key] = Setting(value, source)
    for key, variable in ENVIRONMENT.items():
        if env.get(variable):
            settings[key] = Setting(env[variable], variable)
    if env.get("KOALA_NO_LAST", "") not in ("", "0"):
        settings["remember_last"] = Setting(False, "KOALA_NO_LAST")
    return Resolved(profile=profile, settings=settings, config=config)
