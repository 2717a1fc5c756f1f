"""The provider every HTTP service shares: POST JSON, read the reply as an event stream.

A subclass says only what to send -- ``endpoint``, ``headers`` and ``body`` -- and inherits
sending (``transport``) and reading (``answers``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..answers import answer_batches, event_batches
from ..backoff import Pacer, RetryHook
from ..errors import UsageError
from ..events import EventReader
from ..httperrors import translate_error
from ..messages import Message
from ..text import ascii_host_url, url_secrets
from ..transport import exchange, finish_body
from .base import AsyncGeneratorProvider, ProviderModelMixin, RequestSpec, check_request

__all__ = ["HTTPStreamProvider", "url_under"]


def url_under(base_url: str, path: str) -> str:
    """``path`` appended to a base URL's path; its query string kept (Azure's
    ``?api-version=``), a ``#fragment`` dropped (it never reaches a server anyway)."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path, parts.query, ""))


class HTTPStreamProvider(AsyncGeneratorProvider, ProviderModelMixin):
    """A provider that POSTs JSON and reads the reply as an event stream."""

    #: The environment variable a front end may take this provider's key from.
    api_key_env: ClassVar[str | None] = None
    #: Whether the request takes sampling options (``with_options``).
    takes_options: ClassVar[bool] = False

    @classmethod
    def endpoint(cls, base_url: str) -> str:
        """The URL the conversation is POSTed to, under a base URL."""
        raise NotImplementedError

    @classmethod
    def headers(cls, base_url: str, *, web_search: bool) -> dict[str, str]:
        """The request headers, but for the key (added by ``request_spec``)."""
        raise NotImplementedError

    @classmethod
    def body(cls, messages: Sequence[Message], model: str) -> Mapping[str, object]:
        """The JSON body for a conversation; ``model`` is already resolved."""
        raise NotImplementedError

    @classmethod
    def with_options(cls, body: Mapping[str, object], options: Mapping[str, object]) -> Mapping[str, object]:
        """The body with sampling options (temperature, max_tokens, ...) added; a provider
        whose request has no such fields refuses them, naming the first."""
        raise UsageError(f"{next(iter(options))}: the {cls.__name__.lower()} provider takes no sampling options")

    @classmethod
    def request_spec(
        cls,
        model: str,
        messages: Sequence[Message],
        *,
        base_url: str | None = None,
        web_search: bool = False,
        api_key: str | None = None,
        options: Mapping[str, object] | None = None,
    ) -> RequestSpec:
        """The request for a conversation; pure, so ``--dry-run`` can show it."""
        try:
            base = ascii_host_url(base_url or cls.url)  # Origin and Referer are ASCII too
        except ValueError as exc:
            raise UsageError(f"the base URL cannot be used: {exc}") from None
        headers = cls.headers(base, web_search=web_search)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        body = cls.body(messages, cls.get_model(model))
        if options:
            body = cls.with_options(body, options)
        return RequestSpec(url=cls.endpoint(base), headers=headers, body=body)

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: Sequence[Message],
        proxy: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[str]:
        """Send the conversation; yield the reply's text chunks as they arrive.

        Keyword options: ``client`` (a caller-owned ``httpx.AsyncClient``, never closed here),
        ``base_url``, ``timeout`` (seconds to connect or between bytes), ``web_search``,
        ``api_key``, ``retries``, ``on_retry`` (called with a one-line notice) and ``events``
        (an ``EventReader`` that is left knowing the reply's ``finish_reason`` and ``usage``) and
        ``pacer`` (a ``backoff.Pacer`` shared by many requests: ``--rate`` and a common
        Retry-After pause).
        """
        async with aclosing(cls.stream_batches(model, messages, proxy, **kwargs)) as batches:
            async for batch in batches:
                for chunk in batch:
                    yield chunk

    @classmethod
    async def stream_batches(
        cls,
        model: str,
        messages: Sequence[Message],
        proxy: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        web_search: bool = False,
        api_key: str | None = None,
        retries: int = 3,
        on_retry: RetryHook | None = None,
        options: Mapping[str, object] | None = None,
        events: EventReader | None = None,
        pacer: Pacer | None = None,
    ) -> AsyncGenerator[list[str], None]:
        """Like ``create_async_generator``, but one list of chunks per network read.

        Writers that flush once per list keep every chunk as fresh as its bytes while paying
        for one system call per read instead of one per chunk.  A caller's ``events`` reader
        is left knowing how the reply ended (``finish_reason``, ``usage``).
        """
        api_key, base_url = check_request(
            model, messages, retries=retries, timeout=timeout, api_key=api_key, base_url=base_url
        )
        spec = cls.request_spec(
            model, messages, base_url=base_url, web_search=web_search, api_key=api_key, options=options
        )
        # Our own encoding: ASCII escapes are quicker for a long history, and a lone
        # surrogate (legal in a JSON string) becomes its escape instead of an error.
        body = json.dumps(spec.body, separators=(",", ":")).encode("ascii")
        transfer = exchange(
            spec.method,
            spec.url,
            spec.headers,
            body,
            proxy=proxy,
            client=client,
            timeout=timeout,
            retries=retries,
            on_retry=on_retry,
            secrets=(api_key, *url_secrets(proxy or ""), *url_secrets(base_url or "")),
            pacer=pacer,
        )
        async with transfer as (response, host):
            started = False
            try:
                async for batch in answer_batches(response, host, events):
                    started = True
                    yield batch
                if client is not None:  # a shared client's pool keeps the connection for more requests
                    await finish_body(response)
            except httpx.HTTPError as exc:
                raise translate_error(exc, host, timeout, mid_reply=started) from exc

    @classmethod
    async def list_models(cls, proxy: str | None = None, **options: Any) -> list[str]:
        """The models the service offers; koala's own list where it cannot be asked.  Options as
        for ``stream_batches`` (``client``, ``base_url``, ``timeout``, ``api_key``, ``retries``,
        ``on_retry``)."""
        return list(cls.models)

    @staticmethod
    async def _parse_event_stream(response: httpx.Response) -> AsyncIterator[str]:
        """The text chunks of an event-stream body, in order, until ``[DONE]`` or its end."""
        async for batch in event_batches(response):
            for chunk in batch:
                yield chunk
