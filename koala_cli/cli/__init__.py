"""The command-line front end: the only code that imports Typer or touches stdin, stdout,
the environment and the exit status.  ``main`` is the process entry point of ``koala``.

``koala --version`` is answered before Typer is even imported; everything else goes to the
Typer app (``app``), whose requests import httpx, anyio and the providers only when they
run.  Click's multi-line usage errors become one ``koala: error:`` line here.

Before anything else ``main`` makes the process's standard streams safe to use whatever the
environment: a closed or write-only stdin reads as empty, a terminal whose encoding is not
UTF-8 gets ASCII stand-ins instead of an encoding error, and a stderr whose reader has gone
behaves as ``2>&-`` (the exit status stays the one the outcome deserves).
"""

from __future__ import annotations

import codecs
import errno
import os
import sys
from typing import Any, NoReturn, TextIO, cast

from .. import __version__
from ..errors import ExitStatus


def main(argv: list[str] | None = None) -> NoReturn:
    """Run ``koala`` with ``argv`` (default: the process arguments) and exit."""
    if argv is None:  # the process itself, not a caller's test
        _skip_unused_imports()
    args = sys.argv[1:] if argv is None else argv
    _prepare_streams()
    sys.excepthook = _scrubbed_traceback  # a bug's traceback: secrets masked, inert, like any line
    if sys.stdout is None:
        sys.stderr.write("koala: error: standard output is closed\n")
        sys.exit(ExitStatus.ERROR)
    if args == ["--version"]:
        _version()
    try:
        from .exits import debug_wanted

        debug = debug_wanted(debug_option_given(args))  # for what fails before Typer parses it
        if not debug:
            # what Python can only report as "Exception ignored in ..." (an event loop that a
            # lack of file descriptors left half-built) is not koala's message to print
            sys.unraisablehook = lambda unraisable: None
        _run(args, debug)
    except KeyboardInterrupt:  # Ctrl-C before any signal handling of ours was in place
        sys.stderr.write("koala: interrupted by SIGINT\n")
        sys.exit(ExitStatus.SIGINT)
    except ModuleNotFoundError as exc:
        if exc.name != "fcntl":
            raise
        # Windows: the file locks of histories and logs need fcntl; --help and --dry-run of a
        # plain ask work, the rest says so in one line.
        sys.stderr.write("koala: error: this system has no fcntl (file locking); koala needs Linux, macOS or WSL\n")
        sys.exit(ExitStatus.ERROR)


def _skip_unused_imports() -> None:
    """Not loaded in koala's process: httpx's own command line (click, rich, pygments), which
    httpx imports whenever click is installed, and trio, which httpcore imports whenever it is
    installed.  koala runs on asyncio and uses neither; an environment that happens to hold
    both (a test environment does) would spend ~0.2 s of every start on them."""
    for name in ("httpx._main", "trio"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "import fails"


def _prepare_streams() -> None:
    """Standard streams koala can use whatever state the process was started in."""
    if sys.stderr is None:  # `2>&-`: errors go nowhere, but they still decide the exit status
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    _readable_stdin()
    if sys.stdin is not None and _is_ascii(sys.stdin) and hasattr(sys.stdin, "reconfigure"):
        # a C locale says ASCII, but what is typed is UTF-8 (its superset) more often than not
        sys.stdin.reconfigure(encoding="utf-8", errors="surrogateescape")
    codecs.register_error(_ASCII_FALLBACK, _ascii_fallback)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure") and not _encodes(stream, "\u2026\u2500"):
            stream.reconfigure(errors=_ASCII_FALLBACK)
    sys.stderr = cast(TextIO, _QuietStderr(sys.stderr))


def _readable_stdin() -> None:
    """A closed stdin (`<&-`) or one open for writing only reads as empty: /dev/null takes fd 0."""
    try:
        import fcntl
    except ImportError:  # Windows: no such check; what needs file locks says so itself
        return

    try:
        unusable = sys.stdin is None or fcntl.fcntl(0, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
    except OSError:
        unusable = True
    if not unusable:
        return
    devnull = os.open(os.devnull, os.O_RDONLY)
    if devnull != 0:
        os.dup2(devnull, 0)
        os.close(devnull)
    if sys.stdin is None:
        sys.stdin = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)  # noqa: SIM115


_ASCII_FALLBACK = "koala.ascii"
_STAND_INS = {
    "\u2026": "...",
    "\u2500": "-",
    "\u2014": "--",
    "\u2013": "-",
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
}


def _is_ascii(stream: TextIO) -> bool:
    try:
        return codecs.lookup(stream.encoding or "ascii").name == "ascii"
    except LookupError:
        return False


def _encodes(stream: TextIO, sample: str) -> bool:
    try:
        sample.encode(stream.encoding or "ascii", stream.errors or "strict")
    except (UnicodeError, LookupError):
        return False
    return True


def _ascii_fallback(error: UnicodeError) -> tuple[str, int]:
    """An encoding error handler for a terminal that is not UTF-8: ASCII stand-ins for the
    punctuation koala prints itself (the ``…`` continuation prompt), escapes for the rest."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start : error.end]
    return "".join(_STAND_INS.get(c, c.encode("ascii", "backslashreplace").decode()) for c in text), error.end


class _QuietStderr:
    """stderr that, once its reader has gone, behaves as ``2>&-``: nothing it fails to write
    changes what koala does or its exit status."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            self._gone()

    def _gone(self) -> None:
        try:  # what is still buffered drains into /dev/null from now on
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            self._stream = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _version() -> NoReturn:
    try:
        sys.stdout.write(f"koala {__version__}\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(ExitStatus.SIGPIPE)
    except OSError as exc:
        _silence_stdout()
        sys.stderr.write(f"koala: error: cannot write the output: {exc.strerror or exc}\n")
        sys.exit(ExitStatus.ERROR)
    sys.exit(ExitStatus.OK)


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def debug_option_given(args: list[str]) -> bool:
    """``--debug`` among the arguments, before a ``--`` (after it, a word of the prompt)."""
    return "--debug" in (args[: args.index("--")] if "--" in args else args)


def _run(args: list[str], debug: bool) -> NoReturn:
    import typer

    # Typer vendors click (koala pins typer below 0.29): its usage errors live here.
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
    from typer._click.utils import PacifyFlushWrapper

    from .app import app
    from .exits import say, silence_stdout

    command = typer.main.get_command(app)
    try:
        status = command.main(args=args, prog_name="koala", standalone_mode=False, obj={"debug": debug})
        sys.stdout.flush()  # help text still buffered: its failure is reported here, not at exit
    except NoArgsIsHelpError as exc:  # `koala history`: its help, on stderr
        sys.stderr.write(exc.format_message() + "\n")
        sys.exit(ExitStatus.USAGE)
    except UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        say(f"koala: error: {exc.format_message()}{where}")
        sys.exit(ExitStatus.USAGE)
    except BrokenPipeError:
        silence_stdout()
        sys.exit(ExitStatus.SIGPIPE)
    except OSError as exc:
        _system_failure(exc, debug)
    except MemoryError:  # freed by now: what held it is gone with the stack
        _out_of_memory()
    except BaseExceptionGroup as group:  # the same, inside a task group
        if group.subgroup(MemoryError) is not None:
            _out_of_memory()
        errors, rest = group.split(OSError)
        if errors is None or rest is not None:
            raise
        first: BaseException = errors
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        _system_failure(first, debug)
    except SystemExit as exit_:
        if isinstance(sys.stdout, PacifyFlushWrapper):  # click's own answer to EPIPE is exit 1
            silence_stdout()
            sys.exit(ExitStatus.SIGPIPE)
        raise exit_ from None
    sys.exit(status if isinstance(status, int) else 0)


def _out_of_memory() -> NoReturn:
    from .exits import say

    say("koala: error: out of memory (an input too large for the memory koala may use?)")
    sys.exit(ExitStatus.ERROR)


_WRITE_FAILURES = frozenset((errno.ENOSPC, errno.EFBIG, errno.EDQUOT))


def _system_failure(exc: BaseException, debug: bool) -> NoReturn:
    """The system refused something (help text on a full disk, no file descriptor left):
    one line and status 1, never a traceback (unless --debug)."""
    from .exits import say, silence_stdout

    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    error = exc if isinstance(exc, OSError) else OSError(str(exc))
    if error.errno in _WRITE_FAILURES:
        silence_stdout()
        say(f"koala: error: cannot write the output: {error.strerror or error}")
    elif error.errno in (errno.EMFILE, errno.ENFILE):
        say(f"koala: error: {error.strerror} (see 'ulimit -n')")
    else:
        say(f"koala: error: {error.strerror or error}")
    sys.exit(ExitStatus.ERROR)


def _scrubbed_traceback(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """Python's report of an uncaught exception (a bug), with the known secrets and URL
    credentials masked and control characters escaped, as every line koala writes."""
    import traceback

    from ..text import inert
    from .exits import scrub

    for line in "".join(traceback.format_exception(kind, value, tb)).splitlines():
        sys.stderr.write(inert(scrub(line)) + "\n")
