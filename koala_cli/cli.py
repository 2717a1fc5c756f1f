"""The process entry point of ``koala``.

``koala --version`` is answered before Typer is even imported; everything else goes to the
Typer app (``commands``), whose requests import httpx, anyio and the providers only when
they run.  Click's multi-line usage errors become one ``koala: error:`` line here.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from . import __version__


def main(argv: list[str] | None = None) -> NoReturn:
    """Run ``koala`` with ``argv`` (default: the process arguments) and exit."""
    args = sys.argv[1:] if argv is None else argv
    if sys.stderr is None:  # `2>&-`: errors go nowhere, but they still decide the exit status
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    if sys.stdout is None:
        sys.stderr.write("koala: error: standard output is closed\n")
        sys.exit(1)
    if args == ["--version"]:
        sys.stdout.write(f"koala {__version__}\n")
        sys.exit(0)
    try:
        _run(args)
    except KeyboardInterrupt:  # Ctrl-C before any signal handling of ours was in place
        sys.stderr.write("koala: interrupted by SIGINT\n")
        sys.exit(130)


def _run(args: list[str]) -> NoReturn:
    import typer

    from .commands import app
    from .commands._shared import SIGPIPE_STATUS, silence_stdout

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
    except OSError as exc:  # help or usage text that could not be written (disk full)
        silence_stdout()
        sys.stderr.write(f"koala: error: cannot write the output: {exc.strerror or exc}\n")
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
