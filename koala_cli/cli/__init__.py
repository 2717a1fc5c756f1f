"""The command-line front end: the only code that imports Typer or touches stdin, stdout,
the environment and the exit status.  ``main`` is the process entry point of ``koala``.

``koala --version`` is answered before Typer is even imported; everything else goes to the
Typer app (``app``), whose requests import httpx, anyio and the providers only when they
run.  Click's multi-line usage errors become one ``koala: error:`` line here.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import NoReturn

from .. import __version__
from ..errors import ExitStatus


def main(argv: list[str] | None = None) -> NoReturn:
    """Run ``koala`` with ``argv`` (default: the process arguments) and exit."""
    args = sys.argv[1:] if argv is None else argv
    if sys.stderr is None:  # `2>&-`: errors go nowhere, but they still decide the exit status
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    if sys.stdout is None:
        sys.stderr.write("koala: error: standard output is closed\n")
        sys.exit(ExitStatus.ERROR)
    if args == ["--version"]:
        sys.stdout.write(f"koala {__version__}\n")
        sys.exit(ExitStatus.OK)
    try:
        _run(args)
    except KeyboardInterrupt:  # Ctrl-C before any signal handling of ours was in place
        sys.stderr.write("koala: interrupted by SIGINT\n")
        sys.exit(ExitStatus.SIGINT)


def _run(args: list[str]) -> NoReturn:
    import typer

    # Typer vendors click (koala pins typer below 0.29): its usage errors live here.
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    from .app import app
    from .exits import silence_stdout

    command = typer.main.get_command(app)
    # What start-up made lives until exit: keep it out of the cyclic collector's full passes,
    # which otherwise walk it again and again while a large history is parsed.
    gc.freeze()
    try:
        status = command.main(args=args, prog_name="koala", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `koala history`: its help, on stderr
        sys.stderr.write(exc.format_message() + "\n")
        sys.exit(ExitStatus.USAGE)
    except UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        sys.stderr.write(f"koala: error: {exc.format_message()}{where}\n")
        sys.exit(ExitStatus.USAGE)
    except BrokenPipeError:
        silence_stdout()
        sys.exit(ExitStatus.SIGPIPE)
    except OSError as exc:  # help or usage text that could not be written (disk full)
        silence_stdout()
        sys.stderr.write(f"koala: error: cannot write the output: {exc.strerror or exc}\n")
        sys.exit(ExitStatus.ERROR)
    sys.exit(status if isinstance(status, int) else 0)
