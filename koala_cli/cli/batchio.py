"""``koala batch``'s input and output as file descriptors waited on in the event loop: a
pipe that has nothing to read or no room to write never blocks, so Ctrl-C always works."""

import contextlib
import io
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import OutputError, UsageError

if TYPE_CHECKING:
    from ..jobs import Read
    from ..pipeline import Progress


def open_input(file: str | None) -> tuple[str, "int | BinaryIO | None"]:
    """The input's name and file descriptor -- or, for a standard input without one (an
    in-process test's), its stream; None for a closed stdin, read as empty."""
    if file is None or file == "-":
        stream = sys.stdin
        if stream is None:
            return "<stdin>", None
        try:
            fd = stream.fileno()
            os.fstat(fd)
        except io.UnsupportedOperation:
            return "<stdin>", stream.buffer
        except (OSError, ValueError):
            return "<stdin>", None
        if file is None and os.isatty(fd):
            raise UsageError("no input: give a FILE, or jobs on standard input (see 'koala batch --help')")
        return "<stdin>", fd
    return file, open_file(Path(file))


def open_file(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO with no writer must not block here
        os.set_blocking(fd, True)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{path}: is a directory")
    return fd


def _pollable(fd: int) -> bool:
    """Pipes, sockets and terminals can block a read or write: wait for them in the event
    loop (so Ctrl-C always works); files never do."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


def is_regular(source: "int | BinaryIO | None") -> bool:
    return isinstance(source, int) and stat.S_ISREG(os.fstat(source).st_mode)


def reader(source: "int | BinaryIO | None", name: str) -> "Read":
    """Up to n bytes as they come, waited for in the event loop, never in a blocking read."""
    import anyio

    fd = source if isinstance(source, int) else None
    pollable = fd is not None and _pollable(fd)

    async def read(size: int) -> bytes:
        if source is None:
            return b""
        try:
            if fd is None:  # a stream in memory
                return source.read(size)  # type: ignore[union-attr]
            while True:
                if pollable:
                    await anyio.wait_readable(fd)
                try:
                    return os.read(fd, size)
                except BlockingIOError:  # a stdin left non-blocking by whoever started koala
                    await anyio.wait_readable(fd)
        except OSError as exc:
            raise UsageError(f"{name}: cannot read: {exc.strerror or exc}") from None

    return read


class Output:
    """NDJSON results to stdout, whole lines, as soon as they come; a pipe that is full is
    waited for in the event loop, so a stalled reader never keeps Ctrl-C from working."""

    def __init__(self, stream: BinaryIO, terminal: bool = False) -> None:
        self.stream = stream
        self.terminal = terminal  # there DEL and C1 controls in results are escaped, as JSON allows
        try:
            self.fd: int | None = stream.fileno()
        except io.UnsupportedOperation:  # a stream in memory (an in-process test's)
            self.fd = None
        self.pollable = self.fd is not None and _pollable(self.fd)

    async def write(self, results: list[dict[str, Any]]) -> None:
        import json
        import select

        import anyio

        from ..text import json_terminal_safe

        lines = (json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in results)
        data = b"".join(
            (json_terminal_safe(line) if self.terminal else line).encode("utf-8", "backslashreplace") for line in lines
        )
        view = memoryview(data)
        try:
            if self.fd is None:
                self.stream.write(data)
                self.stream.flush()
                return
            while view:
                try:
                    if self.pollable:  # a pipe with room takes 4 KiB without blocking
                        if not select.select([], [self.fd], [], 0)[1]:
                            await anyio.wait_writable(self.fd)
                        written = os.write(self.fd, view[:4096])
                    else:
                        written = os.write(self.fd, view)
                except BlockingIOError:  # a stdout left non-blocking by whoever started koala
                    await anyio.wait_writable(self.fd)
                    continue
                view = view[written:]
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write the output: {exc.strerror or exc}") from None


async def count_jobs(path: str, progress: "Progress") -> None:
    """The number of jobs in a regular file, for the progress line's total and ETA."""
    import anyio

    def count() -> int:
        total = 0
        rest = b""
        with open(path, "rb") as source:
            while piece := source.read(1 << 20):
                parts = (rest + piece).split(b"\n")
                rest = parts.pop()
                total += sum(1 for part in parts if part.strip())
        return total + (1 if rest.strip() else 0)

    with contextlib.suppress(OSError):
        progress.total = await anyio.to_thread.run_sync(count, abandon_on_cancel=True)
