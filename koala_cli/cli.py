"""The process entry point of ``koala``.

``koala --version`` is answered before Typer is even imported; everything else goes to the
Typer app (``commands``), whose requests import httpx, anyio and the providers only when
they run.  Click's multi-line usage errors become one ``koala: error:`` line here.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from . import __version__

SIGPIPE_STATUS = 128 + 13


def main(argv: list[str] | None = None) -> NoReturn:
    """Run ``koala`` with ``argv`` (default: the process arguments) and exit."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        sys.stdout.write(f"koala {__version__}\n")
        sys.exit(0)
    import typer

    from .commands import app
    from .commands._shared import silence_stdout

    usage_error: type[Exception] = typer.BadParameter.__mro__[1]  # Typer's vendored click UsageError
    command = typer.main.get_command(app)
    try:
        status = command.main(args=args, prog_name="koala", standalone_mode=False)
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `koala history`: its help, on stderr
            sys.stderr.write(exc.format_message() + "\n")  # type: ignore[attr-defined]
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        sys.stderr.write(f"koala: error: {exc.format_message()}{where}\n")  # type: ignore[attr-defined]
        sys.exit(2)
    except BrokenPipeError:
        silence_stdout()
        sys.exit(SIGPIPE_STATUS)
    sys.exit(status if isinstance(status, int) else 0)
