"""``koala config path|show|profiles|init``: the config file, read-only (koala never writes it)."""

import os
import sys
from typing import Annotated

import typer

from ..errors import KoalaError
from .exits import fail
from .settings import Profile, load_settings
from .stdio import notice, write_out, write_path

HELP = """Show the config file and its profiles (koala never writes it).

The file: $KOALA_CONFIG, else $XDG_CONFIG_HOME/koala/config.toml, else
~/.config/koala/config.toml; KOALA_CONFIG= (empty) or --no-config reads none.
'koala config init > FILE' starts one from a commented template."""

_ORDER = (
    "provider",
    "base_url",
    "model",
    "system",
    "timeout",
    "max_time",
    "retries",
    "proxy",
    "web_search",
    "options",
    "stream_usage",
    "api_key_env",
    "api_key_cmd",
    "api_key",
    "remember_last",
    "log",
    "log_prompts",
)

app = typer.Typer(help=HELP, rich_markup_mode=None, no_args_is_help=True, add_completion=False)

TEMPLATE = """\
# koala's config file (TOML). Precedence, highest first: the command line, KOALA_*
# variables, the profile (-p NAME or KOALA_PROFILE), [default], the built-in defaults.

[default]
# profile = "local"            # the profile used without -p
# remember_last = true         # keep the last conversation for `koala ask -c`
# log = "~/koala-requests.jsonl"   # as --log FILE
# log_prompts = false          # as --log-prompts

# Any profile setting may also stand here, under [default].

[profiles.local]               # koala ask -p local "hi"
provider = "openai"            # koala (koala.sh) or openai (any OpenAI-compatible server)
base_url = "http://127.0.0.1:11434"
model = "llama3.2"
# timeout = 60                 # seconds to connect, or between bytes of a reply
# max_time = 300               # seconds for a whole reply
# retries = 3
# proxy = "socks5://127.0.0.1:1080"
# system = "Be brief."         # a system text for every question
# options = { temperature = 0.2, max_tokens = 512 }   # sampling options (openai only)
# stream_usage = true          # ask for token usage (as --usage)

# [profiles.groq]
# provider = "openai"
# base_url = "https://api.groq.com/openai"
# model = "llama-3.1-8b-instant"
# api_key_cmd = "pass show groq"   # run without a shell when a request is sent; or:
# api_key_env = "GROQ_API_KEY"     # the variable that holds the key
# A literal api_key = "..." is used only when this file is readable by you alone (chmod 600).
"""


@app.command("path", help="Print where the config file is looked for (whether it exists or not).")
def path() -> None:
    from ..config import config_path

    found = config_path(os.environ)
    if found is None:
        notice("no config file is read: KOALA_CONFIG is set and empty")
        return
    write_path(found)


@app.command("profiles", help="Print the profile names, one a line.")
def profiles() -> None:
    from ..config import config_path, load_config

    try:  # the file alone: KOALA_PROFILE naming a wrong profile is what this helps to mend
        names = list(load_config(config_path(os.environ)).profiles)
    except KoalaError as exc:
        fail(exc, None, False)
    if names:
        write_out("".join(f"{name}\n" for name in names))


@app.command("init", help="Print a commented config template to stdout (koala config init > FILE).")
def init() -> None:
    write_out(TEMPLATE)


@app.command("show", help="Print the effective settings and where each came from (keys masked).")
def show(
    profile: Profile = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    import json

    try:
        settings = load_settings(profile, False)
        key = _key_source(settings)
    except KoalaError as exc:
        fail(exc, None, False)
    shown: dict[str, tuple[object, str]] = {}
    order = list(_ORDER)
    for name, setting in sorted(settings.settings.items(), key=lambda item: order.index(item[0])):
        value = "***" if name == "api_key" else setting.value
        if name in ("base_url", "proxy") and isinstance(value, str):
            from ..text import mask_url

            value = mask_url(value)  # a URL's credentials are shown as *** too
        shown[name] = (value, setting.source)
    profile_source = (
        "-p" if profile is not None else "KOALA_PROFILE" if os.environ.get("KOALA_PROFILE") else "[default]"
    )
    if json_output:
        record = {
            "config": None if settings.config.path is None else str(settings.config.path),
            "exists": settings.config.path is not None and settings.config.path.exists(),
            "profile": settings.profile,
            "settings": {name: {"value": value, "source": source} for name, (value, source) in shown.items()},
            "key": key,
        }
        write_out(json.dumps(record, ensure_ascii=False, indent=2) + "\n")
        return
    where = settings.config.path
    lines = [f"# config: {where if where is not None else 'none'}"]
    if where is not None and not where.exists():
        lines[0] += " (missing: built-in defaults)"
    if settings.profile is not None:
        lines.append(f"# profile: {settings.profile} (from {profile_source})")
    else:
        lines.append("# profile: none")
    width = max(len(name) for name in shown)
    for name, (value, source) in shown.items():
        lines.append(f"{name.ljust(width)} = {_toml(value)}  # {source}")
    lines.append(f"# key: {key}")
    text = "\n".join(lines) + "\n"
    if sys.stdout.isatty():
        from ..text import terminal_safe

        text = terminal_safe(text)
    write_out(text)


def _key_source(settings: "object") -> str:
    """Which key source a run with these settings would use (the key itself never shown)."""
    from ..config import Resolved
    from ..keys import choose_key
    from ..providers import load_provider

    assert isinstance(settings, Resolved)
    provider = str(settings.value("provider"))
    base_url = settings.value("base_url")
    source = choose_key(
        settings,
        flag=None,
        env=os.environ,
        provider_variable=load_provider(provider).api_key_env,
        provider=provider,
        base_url=None if base_url is None else str(base_url),
    )
    return source.describe


def _toml(value: object) -> str:
    import json

    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value, ensure_ascii=False)
