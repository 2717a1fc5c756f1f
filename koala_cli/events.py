"""Event data to reply text (stdlib only): what each event of a reply carries.

A koala.sh event is a JSON string; drifted shapes -- ``{"text"}``, ``{"content"}``, or
OpenAI's ``choices[0].delta.content`` -- are accepted too.  ``[DONE]`` ends a reply.
"""

from __future__ import annotations

import json
from json.decoder import scanstring  # type: ignore[attr-defined]

from .errors import ProtocolError
from .text import excerpt

__all__ = ["JSON", "chunk_from_event", "chunks_of", "text_of"]

#: A lenient decoder: control characters inside strings are accepted, as servers send them.
JSON = json.JSONDecoder(strict=False)


def chunk_from_event(data: str) -> str | None:
    """The text an event carries, or None when it carries none (an OpenAI role-only delta).

    A JSON string is the text itself; drifted shapes are accepted too (``text_of``).
    Anything else is a ``ProtocolError``.
    """
    # Fast paths: a JSON string with no escapes is its own text between the quotes; one with
    # escapes is scanned in C, if that scan ends exactly at the closing quote.
    if len(data) > 1 and data[0] == '"' == data[-1]:
        if "\\" not in data and '"' not in data[1:-1]:
            return data[1:-1]
        try:
            scanned: tuple[str, int] = scanstring(data, 1, False)
        except ValueError:
            raise ProtocolError(f"malformed event data: {excerpt(data)}") from None
        if scanned[1] == len(data):
            return scanned[0]
    try:
        value = JSON.decode(data)
    except ValueError:
        raise ProtocolError(f"malformed event data: {excerpt(data)}") from None
    return text_of(value, data)


def text_of(value: object, raw: str) -> str | None:
    """The reply text in a decoded event or JSON answer (``raw`` names it in the error)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("text", "content", "output"):
            text = value.get(key)
            if isinstance(text, str):
                return text
        choices = value.get("choices")
        if isinstance(choices, list):
            first = choices[0] if choices else {}
            delta = (first.get("delta") or first.get("message") or {}) if isinstance(first, dict) else None
            if isinstance(delta, dict):
                content = delta.get("content")
                if content is None or isinstance(content, str):
                    return content
    raise ProtocolError(f"unexpected event data: {excerpt(raw)}")


def chunks_of(events: list[str]) -> tuple[list[str], bool, ProtocolError | None]:
    """The non-empty texts of a run of events, whether the stream ended, and why if badly.

    A bad event ends the stream, but the good chunks before it in the same read are still
    delivered: nothing that arrived is lost.
    """
    chunks: list[str] = []
    for data in events:
        if data == "[DONE]":
            return chunks, True, None
        try:
            text = chunk_from_event(data)
        except ProtocolError as exc:
            return chunks, True, exc
        if text:
            chunks.append(text)
    return chunks, False, None
