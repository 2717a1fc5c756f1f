"""koala.sh: how a conversation maps onto its request.  Sending and reading are shared
(``providers.http``)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import ClassVar, TypedDict
from urllib.parse import urlsplit

from ..errors import UsageError
from ..messages import DEFAULT_MODEL, Message
from .http import HTTPStreamProvider, url_under

__all__ = [
    "DEFAULT_BASE_URL",
    "Koala",
    "Payload",
    "build_headers",
    "build_payload",
    "endpoint_url",
    "site_origin",
]

DEFAULT_BASE_URL = "https://koala.sh"
ENDPOINT_PATH = "/api/gpt/"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


class Payload(TypedDict):
    """The JSON body koala.sh expects."""

    input: str
    inputHistory: list[str]
    outputHistory: list[str]
    model: str


def build_payload(messages: Sequence[Message], model: str) -> Payload:
    """Map an OpenAI-style conversation onto koala.sh's fields, as gpt4free's Koala does.

    ``input`` is the last message (the new user turn) followed by the system texts, joined by
    spaces, after one more space (nothing when they are empty); ``inputHistory`` the earlier
    user turns; ``outputHistory`` the assistant turns.
    """
    if not messages:
        raise UsageError("no messages to send")
    *earlier, last = messages
    if last["role"] != "user":
        raise UsageError(f"the last message must be a user turn, not {last['role']}")
    systems = " ".join(m["content"] for m in messages if m["role"] == "system")
    return {
        "input": f"{last['content']} {systems}" if systems else last["content"],
        "inputHistory": [m["content"] for m in earlier if m["role"] == "user"],
        "outputHistory": [m["content"] for m in earlier if m["role"] == "assistant"],
        "model": model,
    }


def endpoint_url(base_url: str) -> str:
    """The API endpoint under a base URL; a path prefix and a query string are kept."""
    return url_under(base_url, ENDPOINT_PATH)


def site_origin(base_url: str) -> str:
    """``scheme://host[:port]`` of a base URL: no credentials, no path."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def build_headers(base_url: str, *, web_search: bool = False) -> dict[str, str]:
    """What koala.sh's own web page sends (the key, if any, is added by ``request_spec``)."""
    origin = site_origin(base_url)
    return {
        "Accept": "text/event-stream",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Origin": origin,
        "Referer": f"{origin}/chat",
        "Visitor-ID": secrets.token_hex(10),
        "Flag-Real-Time-Data": "true" if web_search else "false",
    }


class Koala(HTTPStreamProvider):
    """The koala.sh chat service."""

    url: ClassVar[str] = DEFAULT_BASE_URL
    api_endpoint: ClassVar[str] = endpoint_url(DEFAULT_BASE_URL)
    working: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = True
    api_key_env: ClassVar[str | None] = "KOALA_API_KEY"
    default_model: ClassVar[str] = DEFAULT_MODEL
    models: ClassVar[tuple[str, ...]] = (DEFAULT_MODEL, "gpt-4o")

    endpoint = staticmethod(endpoint_url)
    headers = staticmethod(build_headers)
    body = staticmethod(build_payload)
