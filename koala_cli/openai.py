"""Any OpenAI-compatible chat-completions server: llama.cpp, Ollama, vLLM, hosted services.

Same streaming machinery as koala.sh (``streaming``): only the request differs.  The reply's
``choices[0].delta.content`` chunks and ``[DONE]`` are already understood there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from .errors import UsageError
from .models import DEFAULT_MODEL, Message
from .streaming import HTTPStreamProvider, RequestSpec

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
    default_model: ClassVar[str] = DEFAULT_MODEL
    models: ClassVar[tuple[str, ...]] = (DEFAULT_MODEL, "gpt-4o")

    @classmethod
    def request_spec(
        cls,
        model: str,
        messages: Sequence[Message],
        *,
        base_url: str | None = None,
        web_search: bool = False,
        api_key: str | None = None,
    ) -> RequestSpec:
        if not messages or messages[-1]["role"] != "user":
            raise UsageError("the last message must be a user turn")
        headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        body = {
            "model": cls.get_model(model),
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "stream": True,
        }
        return RequestSpec(url=chat_completions_url(base_url or cls.url), headers=headers, body=body)
