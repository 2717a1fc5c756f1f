"""Batch jobs: parse them, run them under a concurrency limit, one result each.

Results are plain dicts, ready for NDJSON; emitting them is the caller's business.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import anyio

from .errors import KoalaError, UsageError
from .history import validate_message
from .messages import Message
from .sampling import check_key
from .turn import Connection, Reply, conversation, stream_reply

__all__ = ["BadJob", "Job", "Progress", "done_ids", "parse_jobs", "run_batch"]

Result = dict[str, Any]


@dataclass(frozen=True)
class Job:
    """One prompt to send; ``id`` is the caller's (or the line number)."""

    line: int
    id: Any
    prompt: str
    system: str | None = None
    model: str | None = None
    history: list[Message] = field(default_factory=list)
    options: dict[str, object] = field(default_factory=dict)  # sampling options over the command's


@dataclass(frozen=True)
class BadJob:
    """An input line that is not a job: reported in its place, the others still run."""

    line: int
    message: str
    id: Any = None


def parse_jobs(data: bytes, name: str, *, lines: bool = False) -> Iterator[Job | BadJob]:
    """Jobs from JSONL (``{"id", "prompt", "system"?, "model"?, "history"?, "options"?}``) or, with
    ``lines``, one prompt a line.  Blank lines are skipped; a line that is not a job (not
    UTF-8, not JSON, a repeated id, ...) is a ``BadJob`` in its place."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    seen: set[str] = set()
    for number, raw in enumerate(data.split(b"\n"), 1):
        where = f"{name}:{number}"
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            yield BadJob(number, f"{where}: not valid UTF-8")
            continue
        if not line.strip():
            continue
        if lines:
            yield Job(number, number, line)
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            yield BadJob(number, f"{where}: not valid JSON ({exc})")
            continue
        job_id = value.get("id", number) if isinstance(value, dict) else None
        key = json.dumps(job_id, sort_keys=True)
        try:
            if key in seen:
                raise UsageError(f"id {key} appears more than once")
            job = _job(value, number)
        except KoalaError as exc:
            yield BadJob(number, f"{where}: {exc}", job_id)
            continue
        seen.add(key)
        yield job


def _job(value: object, number: int) -> Job:
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
    return Job(number, value.get("id", number), prompt, value.get("system"), value.get("model"), messages, options)


def done_ids(text: str) -> set[str]:
    """The ids (as JSON) that already have an ``ok`` result in an earlier output."""
    ids = set()
    for line in text.split("\n"):  # not splitlines(): U+2028 is legal inside a JSON line
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("ok") is True and "id" in record:
            ids.add(json.dumps(record["id"], sort_keys=True))
    return ids


@dataclass
class Progress:
    """Counts for the progress line."""

    done: int = 0
    failed: int = 0
    in_flight: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        rate = (self.done + self.failed) / max(time.monotonic() - self.started, 1e-9)
        return f"{self.done} done, {self.failed} failed, {self.in_flight} in flight, {rate:.1f}/s"


class _NoOutput:
    """A job writes nothing as it streams: its result carries the text ``stream_reply`` returns."""

    def start(self, model: str) -> None: ...
    def chunks(self, batch: list[str]) -> None: ...
    def done(self, reply: Reply) -> None: ...
    def error(self, message: str, exit_status: int) -> None: ...


async def _run_one(
    job: Job, default_model: str, default_system: str | None, link: Connection, notify: Callable[[str], None]
) -> Result:
    system = job.system if job.system is not None else default_system
    messages = conversation(job.history, system, job.prompt)
    tag = json.dumps(job.id, ensure_ascii=False)
    if job.options:
        link = replace(link, options={**link.options, **job.options})
    try:
        reply = await stream_reply(
            messages, job.model or default_model, link, _NoOutput(), lambda notice: notify(f"job {tag}: {notice}")
        )
    except KoalaError as exc:
        return {"id": job.id, "ok": False, "error": {"message": str(exc), "exit_status": exc.exit_status}}
    first = None if reply.first_chunk_s is None else round(reply.first_chunk_s * 1000, 1)
    return {
        "id": job.id,
        "ok": True,
        "text": reply.text or "",
        "model": reply.model,
        "elapsed_ms": round(reply.elapsed_s * 1000, 1),
        "first_chunk_ms": first,
        "finish_reason": reply.finish_reason,
        **({"usage": reply.usage} if reply.usage is not None else {}),
    }


async def run_batch(
    jobs: list[Job | BadJob],
    *,
    model: str,
    system: str | None,
    connection: Connection,
    concurrency: int,
    ordered: bool,
    emit: Callable[[Result], None],
    progress: Progress,
    on_progress: Callable[[Progress], None],
    notify: Callable[[str], None],
) -> int:
    """Run every job, at most ``concurrency`` at once; return the exit status of the first
    failure in input order (0 when all succeeded)."""
    limiter = anyio.Semaphore(concurrency)
    finished: dict[int, Result] = {}
    next_out = 0
    first_failure: dict[int, int] = {}

    def record(index: int, result: Result) -> None:
        nonlocal next_out
        if result["ok"]:
            progress.done += 1
        else:
            progress.failed += 1
            first_failure[index] = result["error"]["exit_status"]
        if not ordered:
            emit(result)
        else:
            finished[index] = result
            while next_out in finished:
                emit(finished.pop(next_out))
                next_out += 1
        on_progress(progress)

    async def run(index: int, job: Job) -> None:
        try:
            record(index, await _run_one(job, model, system, connection, notify))
        finally:
            progress.in_flight -= 1
            limiter.release()

    async with anyio.create_task_group() as group:
        for index, job in enumerate(jobs):
            if isinstance(job, BadJob):
                error = {"message": job.message, "exit_status": UsageError.exit_status}
                record(index, {"id": job.id, "line": job.line, "ok": False, "error": error})
                continue
            await limiter.acquire()
            progress.in_flight += 1
            group.start_soon(run, index, job)
    return first_failure[min(first_failure)] if first_failure else 0
