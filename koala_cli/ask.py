"""One question, one streamed reply: history in, reply out, history appended on success."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from contextlib import aclosing, nullcontext
from dataclasses import dataclass
from pathlib import Path

import anyio

from .errors import TimeoutError
from .history import append_turns, check_writable, load_history
from .models import Message
from .output import Reply, Writer
from .provider import Koala

__all__ = ["AskOptions", "ask", "conversation"]


@dataclass(frozen=True)
class AskOptions:
    """Everything one ``ask`` needs, already validated by the caller."""

    prompt: str
    model: str
    base_url: str
    system: str | None = None
    history: Path | None = None
    timeout: float = 60.0
    max_time: float | None = None
    proxy: str | None = None
    api_key: str | None = None
    web_search: bool = False
    retries: int = 3


def conversation(prior: list[Message], system: str | None, prompt: str) -> list[Message]:
    """Prior turns, then ``--system``, then the new user turn."""
    messages = list(prior)
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    return messages


async def ask(options: AskOptions, writer: Writer, notify: Callable[[str], None]) -> Reply:
    """Stream the reply into ``writer``; append the turn to the history only once it is complete."""
    prior: list[Message] = []
    if options.history is not None:
        prior = load_history(options.history)
        check_writable(options.history)
    messages = conversation(prior, options.system, options.prompt)
    model = Koala.get_model(options.model)
    writer.start(model)
    parts: list[str] = []
    started = time.monotonic()
    first_chunk: float | None = None
    deadline = anyio.fail_after(options.max_time) if options.max_time else nullcontext()
    try:
        with deadline:
            stream = Koala.stream_batches(
                model,
                messages,
                options.proxy,
                base_url=options.base_url,
                timeout=options.timeout,
                web_search=options.web_search,
                api_key=options.api_key,
                retries=options.retries,
                on_retry=notify,
            )
            async with aclosing(stream) as batches:
                async for batch in batches:
                    if first_chunk is None:
                        first_chunk = time.monotonic() - started
                    writer.chunks(batch)
                    parts += batch
    except builtins.TimeoutError:
        raise TimeoutError(f"no complete reply within --max-time {options.max_time:g} s") from None
    reply = Reply("".join(parts), model, len(parts), first_chunk, time.monotonic() - started)
    if options.history is not None:
        append_turns(options.history, options.prompt, reply.text)
    writer.done(reply)
    return reply
