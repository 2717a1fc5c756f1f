"""Composing the prompt: standard input, then each ``-f`` file as a fenced block headed by
its path, then the argument words, separated by blank lines.  Nothing is ever truncated.

A file block::

    notes.md
    ```
    the file's text
    ```

The fence is one backtick longer than the longest run of backticks starting a line of the
text, so a Markdown file's own fences stay inside the block.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import UsageError

__all__ = ["compose", "fenced", "read_text_file"]

_FENCE_RUN = re.compile(r"^[ \t]*(`{3,})", re.MULTILINE)


def fenced(name: str, text: str) -> str:
    """``text`` in a fenced block headed by ``name``."""
    longest = max((len(m[1]) for m in _FENCE_RUN.finditer(text)), default=2)
    fence = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") or not text else text + "\n"
    return f"{name}\n{fence}\n{body}{fence}"


def compose(stdin: str | None, files: Sequence[tuple[str, str]], words: str) -> str:
    """stdin, the fenced files, the words: the parts that are not empty, a blank line apart."""
    parts = [stdin or "", *(fenced(name, text) for name, text in files), words]
    return "\n\n".join(part for part in parts if part)


def read_text_file(data: bytes, name: str) -> str:
    """A file's bytes as text (``userfile.text_of``), its error saying what ``-f`` takes."""
    from .userfile import text_of

    try:
        return text_of(data, name)
    except UsageError as exc:
        raise UsageError(f"{exc}; -f takes text files") from None
