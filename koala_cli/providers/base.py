"""The provider contract: an async generator of text chunks, the model bookkeeping, and the
request a provider would send (stdlib only)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..messages import Message

__all__ = ["AsyncGeneratorProvider", "ProviderModelMixin", "RequestSpec"]


@dataclass(frozen=True)
class RequestSpec:
    """Exactly what will be sent: shown by ``--dry-run``, sent by ``stream_batches``."""

    url: str
    headers: dict[str, str]
    body: Mapping[str, object]
    method: str = "POST"


class AsyncGeneratorProvider:
    """A chat service whose reply arrives as a stream of text chunks."""

    url: ClassVar[str]
    working: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = False

    @classmethod
    def create_async_generator(
        cls, model: str, messages: Sequence[Message], proxy: str | None = None, **kwargs: Any
    ) -> AsyncIterator[str]:
        """Send the conversation; yield the reply chunk by chunk as it arrives."""
        raise NotImplementedError

    @classmethod
    async def create_async(
        cls, model: str, messages: Sequence[Message], proxy: str | None = None, **kwargs: Any
    ) -> str:
        """The whole reply as one string, for callers that do not stream."""
        parts: list[str] = []
        stream = cls.create_async_generator(model, messages, proxy, **kwargs)
        try:
            async for chunk in stream:
                parts.append(chunk)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return "".join(parts)


class ProviderModelMixin:
    """Known models, the default, and how a requested name resolves."""

    default_model: ClassVar[str]
    models: ClassVar[tuple[str, ...]] = ()
    model_aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def get_model(cls, model: str | None) -> str:
        """An empty name means the default; aliases map to their model; other names pass
        through unchanged, since the service's list changes faster than ours."""
        name = (model or "").strip()
        if not name:
            return cls.default_model
        return cls.model_aliases.get(name, name)
