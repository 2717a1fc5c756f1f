"""Batch jobs as a streaming pipeline: lines become jobs as they arrive, jobs run on one shared
client, results leave in input order (or as they complete) through a bounded window.

    input pieces ──► lines ──► Job | BadJob ──► shard / resume filter ──► window ──► concurrency
        ──► pacer (--rate, a shared Retry-After pause) ──► request ──► results, in order ──► write

Memory depends on the window and the concurrency, not on the input: a line is read only when
the window has room for its result, so a slow first job in ordered mode stops the reading
instead of letting finished results pile up.  A job is known by its id, or, without one, by
its line number (``"line": N`` in its result), so the two can never collide; ``--shard`` and
``--resume`` both go by that key.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from .errors import KoalaError, UsageError
from .history import validate_message
from .messages import Message
from .sampling import check_key
from .transport import Pacer, make_client
from .turn import Connection, Reply, conversation, stream_reply

__all__ = [
    "BadJob",
    "Job",
    "JobParser",
    "Progress",
    "Shard",
    "done_keys",
    "job_key",
    "parse_jobs",
    "run_batch",
]

Result = dict[str, Any]
Read = Callable[[int], Awaitable[bytes]]  # up to n bytes as they come; b"" at the end
Write = Callable[[list[Result]], Awaitable[None]]

READ_SIZE = 1 << 16
MAX_LINE = 64 << 20  # a longer line is a bad line, skipped without being held
TOO_LONG = b"\0too long"  # stands for such a line


def job_key(job_id: Any) -> str:
    """A job's identity: its id as canonical JSON (ValueError for NaN or an infinity)."""
    return json.dumps(job_id, sort_keys=True, separators=(",", ":"), allow_nan=False)


def line_key(number: int) -> str:
    """The identity of a job without an id: not JSON, so no id can ever equal it."""
    return f"line {number}"


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


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
        return _digest(key) % self.count == self.index


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
    (another shard's, or already done according to ``done``, a set of key digests)."""

    def __init__(
        self, name: str, *, lines: bool = False, shard: Shard | None = None, done: set[int] | None = None
    ) -> None:
        self.name, self.lines, self.shard, self.done = name, lines, shard, done or set()
        self._seen: set[int] = set()  # digests of the ids so far: duplicates are bad lines

    def _ours(self, key: str) -> bool:
        return (self.shard is None or self.shard.holds(key)) and (not self.done or _digest(key) not in self.done)

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
        except ValueError as exc:
            return BadJob(number, f"{where}: not valid JSON ({exc})") if self._ours(own) else None
        has_id = isinstance(value, dict) and "id" in value
        try:
            key = job_key(value["id"]) if has_id else own
        except ValueError:
            return BadJob(number, f"{where}: the id must be finite (no NaN or infinity)") if self._ours(own) else None
        if not self._ours(key):
            return None
        job_id = value["id"] if has_id else None
        digest = _digest(key) if has_id else 0
        try:
            if has_id and digest in self._seen:
                raise UsageError(f"id {key} appears more than once")
            job = _job(value, number, has_id)
        except KoalaError as exc:
            return BadJob(number, f"{where}: {exc}", job_id, has_id)
        if has_id:
            self._seen.add(digest)
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
    except ValueError:
        return None
    number = record.get("line")
    return line_key(number) if type(number) is int else None


async def done_keys(read: Read) -> set[int]:
    """The key digests of the jobs with an ``ok`` result in an earlier output, read piece by
    piece (split at ``\\n`` only: U+2028 is legal inside a JSON line)."""
    done: set[int] = set()
    async for line in input_lines(read):
        key = _done_key(line) if line is not TOO_LONG else None
        if key is not None:
            done.add(_digest(key))
    return done


@dataclass
class Progress:
    """Counts for the progress line; ``total`` (jobs in a regular file) when it is known."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    in_flight: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        finished = self.done + self.failed
        text = f"{self.done} done, {self.failed} failed, {self.in_flight} in flight, {finished / elapsed:.1f}/s"
        if self.skipped:
            text += f", {self.skipped} skipped"
        if self.total is not None:
            seen = finished + self.skipped
            left = max(self.total - seen, 0)
            eta = "?" if finished == 0 and left else _clock(left * elapsed / max(seen, 1))
            text += f"; {seen}/{self.total}, ETA {eta}"
        return text


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class _Keep:
    """A writer that keeps nothing: ``stream_reply`` returns the whole text anyway."""

    def start(self, model: str) -> None: ...
    def chunks(self, batch: list[str]) -> None: ...
    def done(self, reply: Reply) -> None: ...
    def error(self, message: str, exit_status: int) -> None: ...


@dataclass
class BatchOptions:
    """What every job of a run shares."""

    model: str
    system: str | None
    connection: Connection
    concurrency: int = 4
    ordered: bool = True
    interval: float | None = None  # seconds between request starts (--rate)
    window: int | None = None  # results started but not yet written, at most (default: see run_batch)


async def _run_one(job: Job, options: BatchOptions, client: Any, pacer: Pacer, notify: Callable[[str], None]) -> Result:
    if isinstance(client, KoalaError):  # the run's client could not be made
        return {**job.ident(), "ok": False, "error": {"message": str(client), "exit_status": client.exit_status}}
    system = job.system if job.system is not None else options.system
    messages = conversation(job.history, system, job.prompt)
    tag = json.dumps(job.id, ensure_ascii=False) if job.has_id else f"on line {job.line}"
    link = options.connection
    if job.options:
        link = replace(link, options={**link.options, **job.options})
    try:
        reply = await stream_reply(
            messages,
            job.model or options.model,
            link,
            _Keep(),
            lambda notice: notify(f"job {tag}: {notice}"),
            client=client,
            pacer=pacer,
        )
    except KoalaError as exc:
        return {**job.ident(), "ok": False, "error": {"message": str(exc), "exit_status": exc.exit_status}}
    first = None if reply.first_chunk_s is None else round(reply.first_chunk_s * 1000, 1)
    return {
        **job.ident(),
        "ok": True,
        "text": reply.text or "",
        "model": reply.model,
        "elapsed_ms": round(reply.elapsed_s * 1000, 1),
        "first_chunk_ms": first,
        "finish_reason": reply.finish_reason,
        **({"usage": reply.usage} if reply.usage is not None else {}),
    }


class _Pipeline:
    """One run: the shared client and pacer, the window, the results held back for order."""

    def __init__(self, options: BatchOptions, write: Write, progress: Progress, notify: Callable[[str], None]) -> None:
        self.options, self.write, self.progress, self.notify = options, write, progress, notify
        window = options.window or max(4 * options.concurrency, 256)
        self.slots = anyio.Semaphore(options.concurrency)
        self.room = anyio.Semaphore(window)  # results started but not yet written
        self.pacer = Pacer(options.interval, notify)
        self.send, self.receive = anyio.create_memory_object_stream[Result](window)
        self.held: dict[int, Result] = {}
        self.next_out = 0
        self.failures: dict[int, int] = {}
        self.on_progress: Callable[[Progress], None] = lambda progress: None
        self.on_result: Callable[[Job, Result], None] | None = None

    def record(self, index: int, result: Result) -> None:
        """A result is in: count it, and pass on everything that order now allows."""
        if result["ok"]:
            self.progress.done += 1
        else:
            self.progress.failed += 1
            self.failures[index] = result["error"]["exit_status"]
        self.on_progress(self.progress)
        self.held[index] = result
        try:
            if not self.options.ordered:
                self.send.send_nowait(self.held.pop(index))
            while self.next_out in self.held:
                self.send.send_nowait(self.held.pop(self.next_out))
                self.next_out += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the writer has failed (a closed stdout): its error ends the run

    async def writer(self) -> None:
        """Write results as they are passed on, all that are waiting at once."""
        async with self.receive:
            async for result in self.receive:
                results = [result]
                while True:
                    try:
                        results.append(self.receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                await self.write(results)
                for _ in results:
                    self.room.release()

    async def run(self, index: int, job: Job, client: Any) -> None:
        try:
            result = await _run_one(job, self.options, client, self.pacer, self.notify)
        finally:
            self.progress.in_flight -= 1
            self.slots.release()
        if self.on_result is not None:
            self.on_result(job, result)
        self.record(index, result)

    async def feed(self, read: Read, parser: JobParser, client: Any) -> None:
        """Start the jobs as their lines arrive, each once the window and a slot have room."""
        async with self.send, anyio.create_task_group() as group:
            index = number = 0
            async for raw in input_lines(read):
                number += 1
                job = parser.parse(number, raw)
                if job is None:
                    if raw.strip():
                        self.progress.skipped += 1
                    continue
                await self.room.acquire()
                if isinstance(job, BadJob):
                    self.record(index, job.result())
                else:
                    await self.slots.acquire()
                    self.progress.in_flight += 1
                    group.start_soon(self.run, index, job, client)
                index += 1


async def run_batch(
    read: Read,
    parser: JobParser,
    options: BatchOptions,
    *,
    write: Write,
    progress: Progress,
    on_progress: Callable[[Progress], None],
    notify: Callable[[str], None],
    on_result: Callable[[Job, Result], None] | None = None,
) -> int:
    """Run every job of the input on one client (a pool of ``concurrency`` connections);
    return the exit status of the first failure in input order (0 when all succeeded).
    ``on_result(job, result)`` is called as each request's job finishes (not for bad lines)."""
    pipeline = _Pipeline(options, write, progress, notify)
    pipeline.on_progress = on_progress
    pipeline.on_result = on_result
    link = options.connection
    async with AsyncExitStack() as stack:
        try:
            made = make_client(link.proxy, link.timeout, _url(link), max_connections=options.concurrency)
            client: Any = await stack.enter_async_context(made)
        except KoalaError as exc:  # no client (a bad SSL_CERT_FILE, no file descriptors): each job says so
            client = exc
        group = await stack.enter_async_context(anyio.create_task_group())
        group.start_soon(pipeline.writer)
        await pipeline.feed(read, parser, client)
    on_progress(progress)
    failures = pipeline.failures
    return failures[min(failures)] if failures else 0


def _url(link: Connection) -> str:
    """Where the requests go (a plain-HTTP server lets the client skip the CA bundle)."""
    provider = link.provider
    return provider.endpoint(link.base_url or provider.url)
