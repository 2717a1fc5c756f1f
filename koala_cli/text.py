"""Text fit for one-line messages (stdlib only): secrets masked, controls removed, length capped."""

from __future__ import annotations

import re

__all__ = ["EXCERPT_CHARS", "excerpt", "mask_secrets"]

EXCERPT_CHARS = 200

_CREDENTIALS = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_SPACE = re.compile(r"\s+")


def mask_secrets(text: str) -> str:
    """Hide ``user:password@`` in any URL of a message."""
    return _CREDENTIALS.sub(r"\1***@", text)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """One printable line of at most ``limit`` characters."""
    line = _SPACE.sub(" ", "".join(c if c.isprintable() else " " for c in text[: limit * 4])).strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."
