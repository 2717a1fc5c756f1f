"""One turn: a question, its streamed reply, and the history appended on success.

Shared by ``koala ask``, ``koala chat`` and ``koala batch``; it knows nothing of the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from . import errors
from .events import EventReader
from .history import append_turns, check_writable, load_history, waiting
from .messages import Message

if TYPE_CHECKING:
    import httpx

    from .backoff import Pacer
    from .output import Writer
    from .providers.http import HTTPStreamProvider

__all__ = [
    "AskOptions",
    "Connection",
    "Deadline",
    "Reply",
    "ask",
    "conversation",
    "last_turns",
    "max_time",
    "read_prior",
    "save_turn",
    "stream_reply",
]


#: Finish reasons of a reply that ended before the model was done: said on stderr, still saved.
CUT_SHORT = {"length": "the token limit was reached", "content_filter": "the server's content filter stopped it"}


def _koala() -> type[HTTPStreamProvider]:
    from .providers.koala import Koala

    return Koala


@dataclass(frozen=True)
class Connection:
    """How to reach the service: the same for every turn of a chat or job of a batch."""

    provider: type[HTTPStreamProvider] = field(default_factory=_koala)
    base_url: str | None = None
    timeout: float = 60.0
    max_time: float | None = None
    proxy: str | None = None
    api_key: str | None = None
    web_search: bool = False
    retries: int = 3
    options: Mapping[str, object] = field(default_factory=dict)  # sampling: temperature, max_tokens, ...

    def request_options(self) -> dict[str, Any]:
        """The keyword options of ``stream_batches`` that this connection sets."""
        return {
            "base_url": self.base_url,
            "timeout": self.timeout,
            "web_search": self.web_search,
            "api_key": self.api_key,
            "retries": self.retries,
            "options": self.options,
        }


@dataclass(frozen=True)
class Reply:
    """A complete reply and how it arrived."""

    text: str | None  # None when nobody asked to keep it (a plain `ask` without history)
    model: str
    chunks: int
    chars: int
    first_chunk_s: float | None
    elapsed_s: float
    finish_reason: str | None = None  # why an OpenAI-style stream ended: stop, length, ...
    usage: dict[str, object] | None = None  # token counts, when the server reported them

    @property
    def chars_per_s(self) -> float | None:
        return round(self.chars / self.elapsed_s, 1) if self.elapsed_s > 0 else None


@dataclass(frozen=True)
class AskOptions:
    """One ``ask``: the prompt and what surrounds it."""

    prompt: str
    model: str = ""
    system: str | None = None
    history: Path | None = None
    max_turns: int | None = None
    connection: Connection = field(default_factory=Connection)


def last_turns(messages: list[Message], turns: int | None) -> list[Message]:
    """System lines, plus the last ``turns`` user turns with what follows each (all if None)."""
    if turns is None:
        return list(messages)
    starts = [i for i, m in enumerate(messages) if m["role"] == "user"]
    cut = len(messages) if turns == 0 else (starts[-turns] if len(starts) >= turns else 0)
    return [m for i, m in enumerate(messages) if i >= cut or m["role"] == "system"]


def conversation(prior: list[Message], system: str | None, prompt: str, max_turns: int | None = None) -> list[Message]:
    """Prior turns (the last ``max_turns`` of them), then ``--system``, then the new user turn."""
    messages = last_turns(prior, max_turns)
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    return messages


async def stream_reply(
    messages: list[Message],
    model: str,
    connection: Connection,
    writer: Writer,
    notify: Callable[[str], None],
    *,
    keep_text: bool = True,
    client: httpx.AsyncClient | None = None,
    pacer: Pacer | None = None,
) -> Reply:
    """Stream one reply into ``writer`` and return it complete (its text only if ``keep_text``).

    ``client``: a shared ``httpx.AsyncClient`` (a chat session's, a batch's), so that turns
    reuse its connections; ``pacer``: a batch's shared request pacing."""
    provider = connection.provider
    model = provider.get_model(model)
    writer.start(model)
    parts: list[str] = []
    events = EventReader()
    chunks = chars = 0
    started = time.monotonic()
    first_chunk: float | None = None
    with max_time(connection.max_time):
        options = connection.request_options()
        stream = provider.stream_batches(
            model, messages, connection.proxy, **options, on_retry=notify, events=events, client=client, pacer=pacer
        )
        async with aclosing(stream) as batches:
            async for batch in batches:
                if first_chunk is None:
                    first_chunk = time.monotonic() - started
                writer.chunks(batch)
                chunks += len(batch)
                chars += sum(map(len, batch))
                if keep_text:
                    parts.append("".join(batch))
    if not chunks:  # a service that answers nothing has failed, whatever its status said
        raise errors.ProtocolError("the service sent an empty reply")
    if events.finish_reason in CUT_SHORT:
        notify(f"the reply was cut short: {CUT_SHORT[events.finish_reason]} (finish_reason {events.finish_reason})")
    text = "".join(parts) if keep_text else None
    elapsed = time.monotonic() - started
    return Reply(text, model, chunks, chars, first_chunk, elapsed, events.finish_reason, events.usage)


async def ask(options: AskOptions, writer: Writer, notify: Callable[[str], None]) -> Reply:
    """Stream the reply into ``writer``; append the turn to the history only once it is complete.

    ``--max-time`` bounds it all, waits for the history's lock included.
    """
    with max_time(options.connection.max_time) as deadline:
        prior: list[Message] = []
        if options.history is not None:
            prior = await read_prior(options.history, notify)
        messages = conversation(prior, options.system, options.prompt, options.max_turns)
        keep = options.history is not None
        reply = await stream_reply(messages, options.model, options.connection, writer, notify, keep_text=keep)
        deadline.what = "the reply was not saved"
        await save_turn(reply, writer, options.history, options.prompt, notify)
    return reply


async def read_prior(path: Path, notify: Callable[[str], None]) -> list[Message]:
    """A history's messages, waiting (interruptibly) for its lock; refused early if the
    turn could not be saved afterwards."""
    prior = await waiting(partial(load_history, path, wait=False), path, notify)
    check_writable(path)
    return prior


async def save_turn(
    reply: Reply, writer: Writer, path: Path | None, prompt: str, notify: Callable[[str], None]
) -> None:
    """End the output, then append the turn: a turn is in the history only if nothing failed.

    The final newline (or done record) is written and flushed first, so a full disk or a
    reader that has gone fails the run before the turn is saved; the append comes last, and
    either writes the whole turn or leaves the file as it was.
    """
    writer.done(reply)
    if path is not None:
        await waiting(partial(append_turns, path, prompt, reply.text or "", wait=False), path, notify)


@dataclass
class Deadline:
    """What has not happened when ``--max-time`` runs out (the error says it)."""

    what: str = "no complete reply"


@contextmanager
def max_time(seconds: float | None) -> Iterator[Deadline]:
    """``--max-time`` as a deadline over everything inside; past it, a koala ``TimeoutError``."""
    deadline = Deadline()
    if not seconds:
        yield deadline
        return
    try:
        with anyio.fail_after(seconds):
            yield deadline
    except TimeoutError:  # the builtin, raised by anyio.fail_after
        raise errors.TimeoutError(f"{deadline.what} within --max-time {seconds:g} s") from None
