"""Batch input: lines become jobs -- or bad lines, reported in their place -- one at a time,
filtered by ``--shard`` and ``--resume``; the pipeline that runs them is ``pipeline``.

A job is known by its id, or, without one, by its line number (``"line": N`` in its result),
so the two can never collide; ``--shard``, ``--resume`` and the repeated-id check all go by
that key.  Lines are split at ``\\n`` only (U+2028 is legal inside a JSON line) and never held
beyond ``MAX_LINE``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import KoalaError, UsageError
from .history import validate_message
from .keyset import KeySet, digest
from .messages import Message
from .sampling import check_key

__all__ = [
    "BadJob",
    "Job",
    "JobParser",
    "Shard",
    "done_keys",
    "input_lines",
    "job_key",
    "parse_jobs",
]

Result = dict[str, Any]
Read = Callable[[int], Awaitable[bytes]]  # up to n bytes as they come; b"" at the end

READ_SIZE = 1 << 16
MAX_LINE = 64 << 20  # a longer line is a bad line, skipped without being held
TOO_LONG = b"\0too long"  # stands for such a line


def job_key(job_id: Any) -> str:
    """A job's identity: its id as canonical JSON (ValueError for NaN or an infinity)."""
    return json.dumps(job_id, sort_keys=True, separators=(",", ":"), allow_nan=False)


def line_key(number: int) -> str:
    """The identity of a job without an id: not JSON, so no id can ever equal it."""
    return f"line {number}"


@dataclass(frozen=True)
class Shard:
    """Shard ``index + 1`` of ``count``: the jobs whose key hashes to it (stable everywhere)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        k, _, n = text.partition("/")
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise UsageError(f"--shard must be K/N with 1 <= K <= N, not {text!r}")
        return cls(int(k) - 1, int(n))

    def holds(self, key: str) -> bool:
        return digest(key) % self.count == self.index


@dataclass(frozen=True)
class Job:
    """One prompt to send, known by ``id`` -- or, when ``has_id`` is false, by its line."""

    line: int
    id: Any
    prompt: str
    system: str | None = None
    model: str | None = None
    history: list[Message] = field(default_factory=list)
    has_id: bool = True
    options: dict[str, object] = field(default_factory=dict)  # sampling options over the command's

    def ident(self) -> Result:
        return {"id": self.id} if self.has_id else {"line": self.line}


@dataclass(frozen=True)
class BadJob:
    """An input line that is not a job: reported in its place, the others still run."""

    line: int
    message: str
    id: Any = None
    has_id: bool = False

    def result(self) -> Result:
        error = {"message": self.message, "exit_status": UsageError.exit_status}
        return {**({"id": self.id} if self.has_id else {}), "line": self.line, "ok": False, "error": error}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class JobParser:
    """Input lines to jobs, one at a time; ``None`` for a blank line or one not to run here
    (another shard's, or already done according to ``done``, the keys of ``done_keys``)."""

    def __init__(
        self, name: str, *, lines: bool = False, shard: Shard | None = None, done: KeySet | None = None
    ) -> None:
        self.name, self.lines, self.shard, self.done = name, lines, shard, done
        self._seen = KeySet()  # the ids so far: a repeated one is a bad line

    def _ours(self, key: str) -> bool:
        return (self.shard is None or self.shard.holds(key)) and (not self.done or key not in self.done)

    def parse(self, number: int, raw: bytes) -> Job | BadJob | None:
        where = f"{self.name}:{number}"
        own = line_key(number)
        if raw is TOO_LONG:
            return BadJob(number, f"{where}: longer than {MAX_LINE >> 20} MiB") if self._ours(own) else None
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            return BadJob(number, f"{where}: not valid UTF-8") if self._ours(own) else None
        if not line.strip():
            return None
        if self.lines:
            return Job(number, number, line) if self._ours(job_key(number)) else None
        try:
            value = json.loads(line, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
            return BadJob(number, f"{where}: not valid JSON ({reason})") if self._ours(own) else None
        has_id = isinstance(value, dict) and "id" in value
        try:
            key = job_key(value["id"]) if has_id else own
        except ValueError:
            return BadJob(number, f"{where}: the id must be finite (no NaN or infinity)") if self._ours(own) else None
        if not self._ours(key):
            return None
        job_id = value["id"] if has_id else None
        if has_id and key in self._seen:  # (an error of the set's own ends the run, not this line)
            return BadJob(number, f"{where}: id {key} appears more than once", job_id, has_id)
        try:
            job = _job(value, number, has_id)
        except KoalaError as exc:
            return BadJob(number, f"{where}: {exc}", job_id, has_id)
        if has_id:
            self._seen.add(key)
        return job


def _job(value: object, number: int, has_id: bool) -> Job:
    if not isinstance(value, dict):
        raise UsageError(f"expected a JSON object, got {type(value).__name__}")
    prompt = value.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError('"prompt" must be a non-empty string')
    for key in ("system", "model"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise UsageError(f'"{key}" must be a string')
    history = value.get("history", [])
    if not isinstance(history, list):
        raise UsageError('"history" must be a list of messages')
    messages = [validate_message(m, f"history[{i}]") for i, m in enumerate(history)]
    options = value.get("options", {})
    if not isinstance(options, dict):
        raise UsageError('"options" must be a JSON object')
    for key in options:
        check_key(key, '"options"')
    job_id = value["id"] if has_id else None
    return Job(number, job_id, prompt, value.get("system"), value.get("model"), messages, has_id, options)


def parse_jobs(data: bytes, name: str, *, lines: bool = False) -> Iterator[Job | BadJob]:
    """Every job of an input held in memory (for small inputs and tests)."""
    parser = JobParser(name, lines=lines)
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), 1):
        job = parser.parse(number, raw)
        if job is not None:
            yield job


async def input_lines(read: Read) -> AsyncIterator[bytes]:
    """The lines of an input read in pieces, without their ``\\n``; a UTF-8 BOM is dropped,
    and a line longer than ``MAX_LINE`` comes as ``TOO_LONG`` without ever being held."""
    parts: list[bytes] = []
    held = 0
    first = True
    while piece := await read(READ_SIZE):
        while first and len(piece) < 3 and b"\xef\xbb\xbf".startswith(piece):
            more = await read(3 - len(piece))  # so that the BOM check sees it whole
            if not more:
                break
            piece += more
        if first:
            piece, first = piece.removeprefix(b"\xef\xbb\xbf"), False
        start = 0
        while (end := piece.find(b"\n", start)) >= 0:
            if held + end - start > MAX_LINE:
                yield TOO_LONG
            else:
                parts.append(piece[start:end])
                yield b"".join(parts)
            parts.clear()
            held, start = 0, end + 1
        held += len(piece) - start
        if held <= MAX_LINE:
            parts.append(piece[start:])
        else:
            parts.clear()
    if held > MAX_LINE:
        yield TOO_LONG
    elif held:
        yield b"".join(parts)


def _done_key(line: bytes) -> str | None:
    try:
        record = json.loads(line, parse_constant=_no_constant)
        if not (isinstance(record, dict) and record.get("ok") is True):
            return None
        if "id" in record:
            return job_key(record["id"])
    except (ValueError, RecursionError):
        return None
    number = record.get("line")
    return line_key(number) if type(number) is int else None


async def done_keys(read: Read) -> KeySet:
    """The keys of the jobs with an ``ok`` result in an earlier output, read piece by
    piece (split at ``\\n`` only: U+2028 is legal inside a JSON line)."""
    done = KeySet()
    async for line in input_lines(read):
        key = _done_key(line) if line is not TOO_LONG else None
        if key is not None:
            done.add(key)
    return done
