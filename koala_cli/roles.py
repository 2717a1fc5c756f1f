"""Roles: reusable system prompts, one plain Markdown file each in ``<config dir>/roles/``.

``-r NAME`` uses ``roles/NAME.md`` as the system text; ``koala roles`` lists the names.
Other tools' prompt files work as they are (the whole file is the text).
"""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError
from .userfile import read_bytes

__all__ = ["list_roles", "read_role"]


def list_roles(folder: Path) -> list[str]:
    """The role names in ``folder`` (files ``NAME.md``), sorted; none when it is missing."""
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UsageError(f"{folder}: {exc.strerror or exc}") from None
    return sorted(p.stem for p in entries if p.suffix == ".md" and not p.name.startswith(".") and p.is_file())


def read_role(folder: Path, name: str) -> str:
    """The text of role ``name``; an unknown name is a usage error listing the known ones."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise UsageError(f"bad role name {name!r} (a file name in {folder}, without .md)")
    path = folder / f"{name}.md"
    try:
        data = read_bytes(path)  # never a device: a role linked to /dev/zero is refused
    except (FileNotFoundError, IsADirectoryError):
        known = ", ".join(list_roles(folder)) or f"none: add NAME.md files to {folder}"
        raise UsageError(f"unknown role {name!r} (known: {known})") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff").strip()
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    if not text:
        raise UsageError(f"{path}: the role is empty")
    return text
