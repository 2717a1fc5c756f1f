"""Any OpenAI-compatible chat-completions server: llama.cpp, Ollama, vLLM, LiteLLM, hosted services.

Only the request differs from koala.sh's; the reply's ``choices[0].delta.content`` chunks,
``finish_reason`` and ``[DONE]`` are understood by the shared reader (``events``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..backoff import RetryHook
from ..errors import ProtocolError, ServiceError, UsageError
from ..events import json_of
from ..httperrors import translate_error
from ..messages import Message
from ..sse import MAX_EVENT_BYTES
from ..text import excerpt
from ..transport import exchange
from .http import HTTPStreamProvider, url_under

__all__ = ["MAX_MODEL_LIST_BYTES", "OpenAI", "api_root", "chat_completions_url", "models_url"]

#: The largest ``/models`` body read (as large as an event may be): past it the server is broken,
#: not generous -- an endless body must not grow memory until it runs out.
MAX_MODEL_LIST_BYTES = MAX_EVENT_BYTES


def api_root(base_url: str) -> str:
    """The API root as the OpenAI SDK, LiteLLM and llm take it: the base URL as given, or
    ``/v1`` under it when it has no path (``http://127.0.0.1:11434`` is Ollama's ``/v1``)."""
    parts = urlsplit(base_url)
    if parts.path.strip("/"):
        return base_url
    return urlunsplit((parts.scheme, parts.netloc, "/v1", parts.query, ""))


def chat_completions_url(base_url: str) -> str:
    """``{root}/chat/completions`` (see ``api_root``); a query string is kept."""
    return url_under(api_root(base_url), "/chat/completions")


def models_url(base_url: str) -> str:
    """``{root}/models`` (see ``api_root``)."""
    return url_under(api_root(base_url), "/models")


def system_first(messages: Sequence[Message]) -> list[Message]:
    """System messages first, each group in its own order: chat templates that allow a system
    message only at the start (Llama-2 and others) make the server fail otherwise."""
    return [m for m in messages if m["role"] == "system"] + [m for m in messages if m["role"] != "system"]


class OpenAI(HTTPStreamProvider):
    """An OpenAI-compatible ``/chat/completions`` endpoint with ``stream: true``."""

    url: ClassVar[str] = "https://api.openai.com/v1"
    working: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = True
    api_key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    takes_options: ClassVar[bool] = True
    default_model: ClassVar[str] = ""  # no name every server has: the caller says which
    models: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def endpoint(cls, base_url: str) -> str:
        return chat_completions_url(base_url)

    @classmethod
    def headers(cls, base_url: str, *, web_search: bool) -> dict[str, str]:
        return {"Accept": "text/event-stream", "Content-Type": "application/json"}

    @classmethod
    def body(cls, messages: Sequence[Message], model: str) -> Mapping[str, object]:
        if not messages or messages[-1]["role"] != "user":
            raise UsageError("the last message must be a user turn")
        return {
            "model": model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in system_first(messages)],
            "stream": True,
        }

    @classmethod
    def with_options(cls, body: Mapping[str, object], options: Mapping[str, object]) -> Mapping[str, object]:
        """Sampling options are fields of the body (they cannot replace model, messages, stream)."""
        return {**body, **{key: value for key, value in options.items() if key not in body}}

    @classmethod
    async def list_models(
        cls,
        proxy: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        api_key: str | None = None,
        retries: int = 3,
        on_retry: RetryHook | None = None,
        **_: Any,
    ) -> list[str]:
        """``GET {root}/models``: the ids the server offers, in its order (blank ids skipped)."""
        url = models_url(base_url or cls.url)
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        transfer = exchange(
            "GET",
            url,
            headers,
            proxy=proxy,
            client=client,
            timeout=timeout,
            retries=retries,
            on_retry=on_retry,
            secrets=(api_key,),
        )
        try:
            async with transfer as (response, host):
                try:
                    body = (await _read_model_list(response, host)).decode("utf-8", "replace")
                except httpx.HTTPError as exc:
                    raise translate_error(exc, host, timeout) from exc
        except ServiceError as exc:
            if exc.status in (404, 405):
                raise ServiceError(
                    f"the server offers no model list: {exc}", status=exc.status, excerpt=exc.excerpt
                ) from None
            raise
        return _model_ids(body, host)


async def _read_model_list(response: httpx.Response, host: str) -> bytes:
    """The whole body, or a ``ProtocolError`` once it passes ``MAX_MODEL_LIST_BYTES``."""
    limit = MAX_MODEL_LIST_BYTES
    body = bytearray()
    async with aclosing(cast("AsyncGenerator[bytes, None]", response.aiter_bytes())) as pieces:
        async for piece in pieces:
            body += piece
            if len(body) > limit:
                raise ProtocolError(f"{host} answered a model list larger than {limit} bytes")
    return bytes(body)


def _model_ids(body: str, host: str) -> list[str]:
    value = json_of(
        body, f"{host} answered a model list that is not JSON", f"{host} answered a model list nested too deeply"
    )
    entries = value.get("data") if isinstance(value, dict) else None
    if not isinstance(entries, list):
        raise ProtocolError(f'{host} answered a model list without "data": {excerpt(body)}')
    # an empty (or blank) id names no model: -m "" means the default, which these servers lack
    ids = (entry.get("id") for entry in entries if isinstance(entry, dict))
    return [name for name in ids if isinstance(name, str) and name.strip()]
