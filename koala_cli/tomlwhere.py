"""Where in a TOML file a key is: ``FILE:LINE`` prefixes for the config file's messages
(``tomllib`` reports the line of a syntax error only, never of a key it parsed)."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["Where", "locator", "toml_reason"]


def toml_reason(message: str, text: str, path: Path) -> str:
    """tomllib's ``why (at line L, column C)`` as ``FILE:L: why (column C)``."""
    found = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
    if found:
        return f"{path}:{found[2]}: {found[1]} (column {found[3]})"
    found = re.fullmatch(r"(.*) \(at end of document\)", message, re.DOTALL)
    if found:
        return f"{path}:{text.count(chr(10)) + 1}: {found[1]} (at the end of the file)"
    return f"{path}: {message}"


class Where:
    """``FILE:LINE:`` prefixes for a key of a table, found in the text (tomllib gives none)."""

    def __init__(self, path: Path, lines: dict[tuple[str, ...], int]) -> None:
        self.path = path
        self.lines = lines

    def __call__(self, *key: str) -> str:
        for length in range(len(key), 0, -1):  # the key's own line, else its (inline) table's
            line = self.lines.get(key[:length])
            if line is not None:
                return f"{self.path}:{line}"
        return str(self.path)


_BARE_OR_QUOTED = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_KEY = re.compile(rf"\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_HEADER = re.compile(rf"\s*\[\[?\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*\]")
_PART = re.compile(_BARE_OR_QUOTED)


def _parts(dotted: str) -> tuple[str, ...]:
    import json

    parts = []
    for part in _PART.findall(dotted):
        if part.startswith('"'):
            part = json.loads(part)
        elif part.startswith("'"):
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)


def locator(text: str, path: Path) -> Where:
    """The first line of every table header and key (a heuristic: multi-line strings are
    skipped, inline tables are found by the line that opens them)."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    closing: str | None = None  # inside a multi-line string that ends with this
    for number, line in enumerate(text.split("\n"), 1):
        if closing is not None:
            if line.count(closing) % 2:
                closing = None
            continue
        header = _HEADER.match(line)
        if header:
            table = _parts(header[1])
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            full = table + _parts(key[1])
            lines.setdefault(full, number)
            rest = line[key.end() :]
            for delimiter in ('"""', "'''"):
                if rest.count(delimiter) % 2:
                    closing = delimiter
    return Where(path, lines)
