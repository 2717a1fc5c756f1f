"""Batch jobs as a streaming pipeline: jobs run on one shared client as their lines arrive,
and results leave in input order (or as they complete) through a bounded window.

    input pieces ──► lines ──► Job | BadJob (``jobs``) ──► window ──► concurrency
        ──► pacer (--rate, a shared Retry-After pause) ──► request ──► results, in order ──► write

Memory depends on the window and the concurrency, not on the input: a line is read only when
the window has room for its result, so a slow first job in ordered mode stops the reading
instead of letting finished results pile up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from .backoff import Pacer
from .errors import KoalaError
from .jobs import BadJob, Job, JobParser, Read, Result, input_lines
from .transport import make_client
from .turn import Connection, Reply, conversation, stream_reply

__all__ = ["BatchOptions", "Progress", "run_batch"]

Write = Callable[[list[Result]], Awaitable[None]]


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
        self.first_failure: tuple[int, int] | None = None  # (index, exit status): the status of the run
        self.on_progress: Callable[[Progress], None] = lambda progress: None
        self.on_result: Callable[[Job, Result], None] | None = None

    def record(self, index: int, result: Result) -> None:
        """A result is in: count it, and pass on everything that order now allows."""
        if result["ok"]:
            self.progress.done += 1
        else:
            self.progress.failed += 1
            if self.first_failure is None or index < self.first_failure[0]:
                self.first_failure = index, result["error"]["exit_status"]
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

    async def feed(self, read: Read, parser: JobParser, client: Any) -> KoalaError | None:
        """Start the jobs as their lines arrive, each once the window and a slot have room.
        An error that ends the input (a read that fails, job ids that cannot be kept) is
        returned once the jobs already started have finished: their results are not lost."""
        async with self.send, anyio.create_task_group() as group:
            index = number = 0
            try:
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
            except KoalaError as exc:
                return exc
        return None


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
        stopped = await pipeline.feed(read, parser, client)
    on_progress(progress)
    if stopped is not None:
        raise stopped
    return pipeline.first_failure[1] if pipeline.first_failure else 0


def _url(link: Connection) -> str:
    """Where the requests go (a plain-HTTP server lets the client skip the CA bundle)."""
    provider = link.provider
    return provider.endpoint(link.base_url or provider.url)
