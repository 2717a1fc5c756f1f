"""The shapes that cross the library's public seam (stdlib only)."""

from __future__ import annotations

from typing import Literal, TypedDict

__all__ = ["DEFAULT_MODEL", "ROLES", "Message", "Role"]

Role = Literal["system", "user", "assistant"]
ROLES: frozenset[str] = frozenset(("system", "user", "assistant"))
DEFAULT_MODEL = "gpt-4o-mini"


class Message(TypedDict):
    """One turn of a conversation: the OpenAI message shape, one per history-file line."""

    role: Role
    content: str
