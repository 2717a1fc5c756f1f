"""What a config file may hold, and the check of one that parsed: each problem a
``UsageError`` reading ``FILE:LINE: why`` (``tomlwhere`` finds the line)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from .errors import UsageError
from .tomlwhere import Where

__all__ = ["RESERVED_OPTIONS", "check", "unknown_profile"]

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
RESERVED_OPTIONS = {"model": "-m/--model", "messages": "the prompt", "stream": "nothing (koala always streams)"}


def check(document: dict[str, object], where: Where) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
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
