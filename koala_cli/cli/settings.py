"""The config file's part in a command: ``-p/--profile``, ``--no-config``, and the profile's
settings handed to Click as the context's ``default_map``.

Click resolves every option from the command line, then its environment variable, then
``ctx.default_map``, then its default -- the precedence koala documents (command line >
``KOALA_*`` > the profile > ``[default]`` > built-ins) -- so the profile only has to be merged
and put in place before the options are processed.  ``ProfiledCommand.parse_args`` does that
after a first look at the arguments for ``-p`` and ``--no-config``; ``--help`` reads no file.
"""

import os
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand

from ..errors import KoalaError
from .exits import debug_wanted, fail

if TYPE_CHECKING:
    from ..config import Resolved

SETTINGS = "koala.settings"

Profile = Annotated[
    str | None,
    typer.Option(
        "-p",
        "--profile",
        metavar="NAME",
        envvar="KOALA_PROFILE",
        help="Use [profiles.NAME] of the config file (see 'koala config').",
    ),
]
NoConfig = Annotated[bool, typer.Option("--no-config", help="Read no config file (as KOALA_CONFIG= does).")]

# The config settings that are option defaults, by option name (keys and options are not:
# ``koala_cli.keys`` and the sampling options read them from the settings).
_OPTION_NAMES = {
    **{name: name for name in ("provider", "base_url", "model", "timeout", "max_time", "retries", "proxy")},
    **{name: name for name in ("web_search", "system", "log", "log_prompts")},
    "stream_usage": "usage",
}


class ProfiledCommand(TyperCommand):
    """A command whose option defaults come from the config file's profile."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            opts, _, _ = self.make_parser(ctx).parse_args(args=list(args))
            if not opts.get("help"):
                try:
                    resolved = load_settings(opts.get("profile"), bool(opts.get("no_config")))
                except KoalaError as exc:
                    fail(exc, None, debug_wanted(bool(opts.get("debug"))))
                ctx.meta[SETTINGS] = resolved
                names = {param.name for param in self.params}
                given = {_OPTION_NAMES[k]: v for k, v in resolved.from_file().items() if k in _OPTION_NAMES}
                ctx.default_map = {**(ctx.default_map or {}), **{k: v for k, v in given.items() if k in names}}
        return super().parse_args(ctx, args)


def load_settings(profile: str | None, no_config: bool) -> "Resolved":
    """The config file (unless ``no_config``) merged for ``profile`` (else ``KOALA_PROFILE``)."""
    from ..config import config_path, load_config, resolve

    if profile is None:
        profile = os.environ.get("KOALA_PROFILE") or None
    if profile is not None:
        from .options import check_text

        profile = check_text("-p/--profile", profile)  # under a C locale: the text of the bytes given
    config = load_config(config_path(os.environ, no_config=no_config))
    return resolve(config, profile, os.environ)


def settings_of(ctx: typer.Context) -> "Resolved":
    """The settings ``ProfiledCommand`` merged for this run (none read: built-ins only)."""
    resolved: Resolved | None = ctx.meta.get(SETTINGS)
    if resolved is None:
        from ..config import Config, resolve

        resolved = resolve(Config(), None, os.environ)
    return resolved
