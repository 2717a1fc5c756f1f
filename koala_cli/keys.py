"""Where the API key of a run comes from, highest first:

1. ``--api-key``;
2. the provider's own variable (``KOALA_API_KEY`` for koala.sh, ``OPENAI_API_KEY`` for openai);
3. the profile's ``api_key_env``: the variable it names;
4. the profile's ``api_key_cmd``: a command run without a shell (``pass show groq``), its
   stdout stripped; run only when a request is really sent, within 10 s;
5. a literal ``api_key`` in the config file, refused unless the file is readable by its owner
   only (as ssh does with keys).

Sources 3-5 belong to the table that sets them (``[default]`` or ``[profiles.NAME]``) and are
used only when the run goes to that table's server: the same provider and base URL, so a
profile's key never reaches a server named on the command line instead.
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import Resolved
from .errors import UsageError

if TYPE_CHECKING:
    import subprocess

__all__ = ["KEY_COMMAND_SECONDS", "KeySource", "choose_key"]

KEY_COMMAND_SECONDS = 10.0
MAX_KEY_OUTPUT = 64 * 1024  # a key is a line: more is not read, let alone kept


@dataclass(frozen=True)
class KeySource:
    """The chosen key, or the command that prints it; ``describe`` says which, never the key."""

    describe: str
    value: str | None = None
    command: tuple[str, ...] | None = None
    owner: str = ""  # "profile 'groq'" or "[default]", for errors

    def get(self) -> str | None:
        """The key; runs the command (each call: the front end calls it once per run)."""
        if self.command is None:
            return self.value
        return run_key_command(self.command, self.owner)


NO_KEY = KeySource("none")


def choose_key(
    resolved: Resolved,
    *,
    flag: str | None,
    env: Mapping[str, str],
    provider_variable: str | None,
    provider: str,
    base_url: str | None,
) -> KeySource:
    """The key source for a run to ``provider`` at ``base_url`` (the effective ones)."""
    if flag is not None:
        return KeySource("--api-key", value=flag)
    if provider_variable and env.get(provider_variable):
        return KeySource(provider_variable, value=env[provider_variable])
    for key in ("api_key_env", "api_key_cmd", "api_key"):
        setting = resolved.settings.get(key)
        if setting is None or not _same_server(resolved, setting.source, provider, base_url):
            continue
        owner = _owner(setting.source)
        if key == "api_key_env":
            name = str(setting.value)
            if env.get(name):
                return KeySource(f"{name} ({setting.source} api_key_env)", value=env[name], owner=owner)
        elif key == "api_key_cmd":
            return KeySource(f"{setting.source} api_key_cmd", command=_words(setting.value), owner=owner)
        else:
            config = resolved.config
            if not config.private:
                raise UsageError(
                    f"{config.path}: holds an api_key but others may read it; "
                    f"run 'chmod 600 {config.path}', or use api_key_cmd or api_key_env ({owner})"
                )
            return KeySource(f"{setting.source} api_key", value=str(setting.value), owner=owner)
    return NO_KEY


def _owner(source: str) -> str:
    if source.startswith("[profiles."):
        return f"profile {source[len('[profiles.') : -1]!r}"
    return source


def _words(value: object) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(word) for word in value)
    import shlex

    return tuple(shlex.split(str(value)))


def _same_server(resolved: Resolved, source: str, provider: str, base_url: str | None) -> bool:
    """Does the run go to the server of the table that set a key?"""
    tables = [resolved.config.default]
    if source.startswith("[profiles.") and resolved.profile is not None:
        tables.append(resolved.config.profiles[resolved.profile])
    own_provider: object = "koala"
    own_url: object = None
    for table in tables:
        own_provider = table.get("provider", own_provider)
        own_url = table.get("base_url", own_url)
    return str(own_provider).strip().lower() == provider.strip().lower() and _url(own_url) == _url(base_url)


def _url(value: object) -> str | None:
    return None if value is None else str(value).rstrip("/")


def run_key_command(argv: tuple[str, ...], owner: str) -> str:
    """Run a key command without a shell; its stdout, stripped, is the key.

    Its stderr passes through (a password manager may ask something there); its output is
    never shown, not even on failure.
    """
    what = f"the api_key_cmd of {owner} ({argv[0]!r})" if argv else f"the api_key_cmd of {owner}"
    if not argv:
        raise UsageError(f"{what} is empty")
    try:
        done = _output_of(argv)
    except FileNotFoundError:
        raise UsageError(f"{what}: command not found") from None
    except PermissionError:
        raise UsageError(f"{what}: permission denied") from None
    except TimeoutError:
        raise UsageError(f"{what} did not finish within {KEY_COMMAND_SECONDS:g} s") from None
    except OverflowError:
        raise UsageError(f"{what} printed more than {MAX_KEY_OUTPUT >> 10} KiB: not a key (not shown)") from None
    except OSError as exc:
        raise UsageError(f"{what} could not run: {exc.strerror or exc}") from None
    if done.returncode != 0:
        raise UsageError(f"{what} failed with exit status {done.returncode}")
    try:
        key = done.stdout.decode("ascii").strip()
    except UnicodeDecodeError:
        key = "\0"
    if not key:
        raise UsageError(f"{what} printed no key")
    if not key.isprintable():
        raise UsageError(f"{what} printed something that is not a key (one line of printable ASCII; not shown)")
    return key


def _output_of(argv: tuple[str, ...]) -> subprocess.CompletedProcess[bytes]:
    """The finished command and its stdout, within ``KEY_COMMAND_SECONDS`` (else
    ``TimeoutError``) and ``MAX_KEY_OUTPUT`` bytes (else ``OverflowError``); it is killed
    when it runs over either."""
    import subprocess

    deadline = time.monotonic() + KEY_COMMAND_SECONDS
    output = bytearray()
    with subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(process.stdout, selectors.EVENT_READ)
                while chunk := _read_by(selector, process.stdout.fileno(), deadline):
                    output += chunk
                    if len(output) > MAX_KEY_OUTPUT:
                        raise OverflowError
            process.wait(max(0.0, deadline - time.monotonic()))
        except BaseException as exc:  # over time or size, and Ctrl-C too, as subprocess.run does
            process.kill()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise TimeoutError from None
            raise
    return subprocess.CompletedProcess(list(argv), process.returncode, bytes(output))


def _read_by(selector: selectors.BaseSelector, fd: int, deadline: float) -> bytes:
    """The next piece of ``fd`` (empty at its end), unless ``deadline`` passes first."""
    left = deadline - time.monotonic()
    if left <= 0 or not selector.select(left):
        raise TimeoutError
    return os.read(fd, 65536)
