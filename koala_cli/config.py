"""The config file: where it is, and the settings a profile gives (what it may hold: ``configcheck``).

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

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .configcheck import check, unknown_profile
from .errors import UsageError
from .tomlwhere import locator, toml_reason
from .userfile import read_bytes, text_of

__all__ = [
    "BUILTIN",
    "Config",
    "Setting",
    "config_path",
    "load_config",
    "resolve",
]

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
    text = text_of(data, str(path))
    import tomllib

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(toml_reason(str(exc), text, path)) from None
    except RecursionError:  # deeper than Python's recursion limit
        raise UsageError(f"{path}: nested too deeply") from None
    where = locator(text, path)
    default, profiles = check(document, where)
    private = (info.st_mode & 0o077) == 0 and (not hasattr(os, "getuid") or info.st_uid == os.getuid())
    return Config(path=path, default=default, profiles=profiles, private=private)


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
