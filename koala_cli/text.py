"""Text fit for a terminal or a one-line message (stdlib only): secrets masked, controls made inert,
length capped."""

from __future__ import annotations

import re

__all__ = ["EXCERPT_CHARS", "excerpt", "json_terminal_safe", "mask_secrets", "terminal_safe"]

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


def _terminal_table() -> dict[int, str]:
    table = {code: f"^{chr(code + 64)}" for code in range(0x20) if code not in (0x09, 0x0A)}
    table[0x7F] = "^?"
    table.update({code: f"\\x{code:02x}" for code in range(0x80, 0xA0)})
    return table


_TERMINAL_SAFE = _terminal_table()


def terminal_safe(text: str) -> str:
    """Show control characters (ESC, CR, C1, ...) as inert text, keeping newlines and tabs.

    The model's text is untrusted: on a terminal it must not move the cursor, retitle the
    window or hide what it printed.
    """
    return text.translate(_TERMINAL_SAFE)


# DEL and C1 controls are legal raw in JSON but act on a terminal: escape them there.
_JSON_TERMINAL_SAFE = {code: f"\\u{code:04x}" for code in range(0x7F, 0xA0)}


def json_terminal_safe(text: str) -> str:
    """JSON text with DEL and C1 controls escaped: still the same JSON, inert on a terminal."""
    return text.translate(_JSON_TERMINAL_SAFE)
