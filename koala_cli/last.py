"""The "last conversation" that ``koala ask -c`` and ``koala chat -c`` continue.

It lives in ``$XDG_STATE_HOME/koala/`` (default ``~/.local/state/koala/``; the folder is made
0700, every file 0600):

* ``last`` names the last conversation: one line, its absolute path;
* ``last.jsonl`` is the conversation of the last plain ``koala ask`` (one without ``-H``).

A successful plain ask writes its two turns to a new private file (as the reply arrives:
``Recording``) and renames it over
``last.jsonl``, then renames a new ``last`` into place: renames are atomic, so concurrent
plain asks never mix two conversations -- the one that finishes last wins, whole.  A run with
``-H FILE`` (or ``-c``) appends to its file under the history lock and then names it in
``last``.  (A plain ask finishing while a ``-c`` on ``last.jsonl`` is still running replaces
the file that ``-c`` then extends; the plain ask wins.)
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    from .messages import Message
    from .output import Writer
    from .turn import Reply

__all__ = [
    "Recording",
    "RecordingWriter",
    "last_conversation",
    "remember",
    "require_last",
    "save_exchange",
    "state_dir",
]

POINTER = "last"
CONVERSATION = "last.jsonl"


def state_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/koala``, else ``~/.local/state/koala`` (a relative XDG value is ignored)."""
    base = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return Path(base) / "koala"


def last_conversation(state: Path) -> Path | None:
    """The path ``last`` names, or None when there is none yet."""
    pointer = state / POINTER
    try:  # non-blocking: a FIFO put in its place must not hang every `-c`
        descriptor = os.open(pointer, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{pointer}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UsageError(f"{pointer}: not a regular file")
    with os.fdopen(descriptor, "rb") as file:
        data = file.read()
    name = data.removesuffix(b"\n")
    return Path(os.fsdecode(name)) if name else None


def require_last(state: Path) -> Path:
    """The last conversation for ``-c``; a usage error when there is none."""
    path = last_conversation(state)
    if path is None:
        raise UsageError("no last conversation to continue (-c): ask something first, or use -H FILE")
    if not path.exists():
        raise UsageError(f"the last conversation {str(path)!r} no longer exists; use -H FILE")
    return path


def remember(state: Path, conversation: Path) -> None:
    """Name ``conversation`` as the last one (an atomic replace of ``last``)."""
    _replace(state, POINTER, os.fsencode(os.path.abspath(conversation)) + b"\n")


def save_exchange(state: Path, messages: Sequence[Message]) -> Path:
    """Keep a plain ask's turns as ``last.jsonl`` (replaced whole) and name it the last one."""
    from .history import format_messages

    path = _replace(state, CONVERSATION, format_messages(messages))
    remember(state, path)
    return path


def _replace(state: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a new 0600 file in ``state`` and rename it over ``name``."""
    try:
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = state / f".{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            target = state / name
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise UsageError(f"cannot keep the last conversation in {state}: {exc.strerror or exc}") from None
    return target


class Recording:
    """A plain ask's exchange, written to a private temporary file as the reply arrives (so
    no reply is held in memory for it) and renamed over ``last.jsonl`` once it is complete."""

    def __init__(self, state: Path, prompt: str) -> None:
        import json

        self.state = state
        try:
            state.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.temporary = state / f".{CONVERSATION}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
            descriptor = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise UsageError(f"cannot keep the last conversation in {state}: {exc.strerror or exc}") from None
        self.file = os.fdopen(descriptor, "wb")
        self.failed: OSError | None = None
        user = json.dumps({"role": "user", "content": prompt}, ensure_ascii=False)
        self._write(f'{user}\n{{"role": "assistant", "content": "'.encode("utf-8", "backslashreplace"))

    def _write(self, data: bytes) -> None:
        if self.failed is None:
            try:
                self.file.write(data)
            except OSError as exc:
                self.failed = exc

    def add(self, batch: list[str]) -> None:
        """Some more of the reply (JSON-escaped as ``format_messages`` would)."""
        import json

        self._write(json.dumps("".join(batch), ensure_ascii=False)[1:-1].encode("utf-8", "backslashreplace"))

    def commit(self) -> Path:
        """The reply is complete: make the file ``last.jsonl`` and the last conversation."""
        self._write(b'"}\n')
        try:
            if self.failed is not None:
                raise self.failed
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            target = self.state / CONVERSATION
            os.replace(self.temporary, target)
        except OSError as exc:
            self.discard()
            raise UsageError(f"cannot keep the last conversation in {self.state}: {exc.strerror or exc}") from None
        remember(self.state, target)
        return target

    def discard(self) -> None:
        """The reply failed: nothing is kept."""
        import contextlib

        with contextlib.suppress(OSError):
            self.file.close()
        self.temporary.unlink(missing_ok=True)


class RecordingWriter:
    """A ``Writer`` that also hands every batch of the reply to a ``Recording``."""

    def __init__(self, writer: Writer, recording: Recording) -> None:
        self.writer = writer
        self.recording = recording

    def start(self, model: str) -> None:
        self.writer.start(model)

    def chunks(self, batch: list[str]) -> None:
        self.writer.chunks(batch)
        self.recording.add(batch)

    def done(self, reply: Reply) -> None:
        self.writer.done(reply)

    def error(self, message: str, exit_status: int) -> None:
        self.writer.error(message, exit_status)
