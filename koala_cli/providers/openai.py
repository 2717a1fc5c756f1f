"""Any OpenAI-compatible chat-completions server: llama.cpp, Ollama, vLLM, hosted services.

Only the request differs from koala.sh's; the reply's ``choices[0].delta.content`` chunks and
``[DONE]`` are understood by the shared reader (``events``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from ..errors import UsageError
from ..messages import DEFAULT_MODEL, Message
from .http import HTTPStreamProvider

__all__ = ["OpenAI", "chat_completions_url"]


def chat_completions_url(base_url: str) -> str:
    """``{base}/v1/chat/completions``; a base that already ends in ``/v1`` is not doubled."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return f"{base}/v1/chat/completions"


class OpenAI(HTTPStreamProvider):
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint with ``stream: true``."""

    url: ClassVar[str] = "https://api.openai.com"
    working: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = True
    api_key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    takes_options: ClassVar[bool] = True
    default_model: ClassVar[str] = DEFAULT_MODEL
    models: ClassVar[tuple[str, ...]] = (DEFAULT_MODEL, "gpt-4o")

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
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "stream": True,
        }

    @classmethod
    def with_options(cls, body: Mapping[str, object], options: Mapping[str, object]) -> Mapping[str, object]:
        """Sampling options are fields of the body (they cannot replace model, messages, stream)."""
        return {**body, **{key: value for key, value in options.items() if key not in body}}
