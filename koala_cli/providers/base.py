"""The provider contract: an async generator of text chunks, the model bookkeeping, and the
request a provider would send (stdlib only)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import UsageError
from ..messages import ROLES, Message

__all__ = ["AsyncGeneratorProvider", "ProviderModelMixin", "RequestSpec", "check_request"]


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
            if not cls.default_model:
                raise UsageError(
                    f"no model given, and {cls.__name__} servers have no default: name one with -m "
                    f"('koala models --provider {cls.__name__.lower()}' lists what the server offers)"
                )
            return cls.default_model
        return cls.model_aliases.get(name, name)


def check_request(
    model: object, messages: object, *, retries: object, timeout: object, api_key: object, base_url: object
) -> tuple[str | None, str | None]:
    """Misuse of the library is a ``UsageError`` before anything is sent, never a ``KeyError``
    or ``TypeError`` from deep inside.  Returns the key as sent (surrounding whitespace
    stripped) and the base URL with its host in ASCII (punycode)."""
    from ..text import ascii_host_url

    if model is not None and not isinstance(model, str):
        raise UsageError(f"the model must be a string, not {type(model).__name__}")
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise UsageError("messages must be a non-empty list of {'role': ..., 'content': ...} mappings")
    for number, message in enumerate(messages, 1):
        if not isinstance(message, Mapping):
            raise UsageError(f"message {number} is not a mapping but {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or role not in ROLES:
            raise UsageError(f"message {number}: the role must be one of {', '.join(sorted(ROLES))}")
        if not isinstance(content, str):
            raise UsageError(f"message {number}: the content must be a string")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise UsageError(f"retries must be a whole number, 0 or more, not {retries!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise UsageError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if api_key is not None:
        if not isinstance(api_key, str):
            raise UsageError(f"the API key must be a string, not {type(api_key).__name__}")
        api_key = api_key.strip()
        if not (api_key.isascii() and api_key.isprintable()):
            raise UsageError("the API key must be printable ASCII (it is not shown here)")
    if base_url is not None:
        if not isinstance(base_url, str) or not base_url.lower().startswith(("http://", "https://")):
            raise UsageError("the base URL must be a string starting with http:// or https://")
        try:
            base_url = ascii_host_url(base_url)
        except ValueError as exc:
            raise UsageError(f"the base URL cannot be used: {exc}") from None
    return api_key or None, base_url
