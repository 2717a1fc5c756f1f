"""Reading a file the user named (``-f``, ``--system-file``, a role, the config file): a
regular file or a pipe, never a device."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import UsageError

__all__ = ["read_bytes", "text_of"]


def read_bytes(path: Path) -> bytes:
    """A file's bytes, or a pipe's (``-f <(command)``), or none from the null device; another
    device is not even opened -- ``/dev/zero`` would be read until memory ran out, a terminal
    would wait for typing -- but refused with an ``OSError`` (as a missing file is)."""

    def refuse_devices(info: os.stat_result) -> None:
        mode = info.st_mode
        if stat.S_ISCHR(mode) and info.st_rdev == os.stat(os.devnull).st_rdev:
            return
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
            raise OSError(errno.ENODEV, "not a regular file or a pipe")

    refuse_devices(path.stat())
    with path.open("rb") as file:
        refuse_devices(os.fstat(file.fileno()))  # the same file that was checked
        return file.read()


def text_of(data: bytes, name: str) -> str:
    """A file's bytes as text, a UTF-8 BOM (Windows editors write one) dropped; not UTF-8 is a
    usage error naming the file, line and byte."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UsageError(f"{name}:{line}: not valid UTF-8 (byte {exc.start})") from None
