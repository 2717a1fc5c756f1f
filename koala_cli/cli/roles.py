"""``koala roles``: the role names, one a line (``<config dir>/roles/NAME.md``)."""

import os

from ..errors import KoalaError
from .exits import fail
from .stdio import write_out

HELP = """List the roles: NAME for each <config dir>/roles/NAME.md (used with -r NAME).

The config dir is the folder of the config file (~/.config/koala by default)."""


def roles() -> None:
    from ..config import config_dir
    from ..roles import list_roles

    try:
        names = list_roles(config_dir(os.environ) / "roles")
    except KoalaError as exc:
        fail(exc, None, False)
    if names:
        write_out("".join(f"{name}\n" for name in names))
