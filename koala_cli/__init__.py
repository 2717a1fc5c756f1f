"""koala: a streaming command-line client and Python library for the koala.sh chat service.

The library is importable without the CLI: ``import koala_cli`` never loads Typer, and httpx
is loaded only when the provider is first touched, so ``koala --version`` stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    BlockedError,
    HistoryError,
    KoalaError,
    NetworkError,
    OutputError,
    ProtocolError,
    ServiceError,
    TimeoutError,
    UsageError,
)
from .models import DEFAULT_MODEL, Message, Role

if TYPE_CHECKING:
    from .base import AsyncGeneratorProvider, ProviderModelMixin
    from .openai import OpenAI
    from .provider import Koala, build_payload
    from .streaming import HTTPStreamProvider, RequestSpec

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "PROVIDERS",
    "AsyncGeneratorProvider",
    "BlockedError",
    "HTTPStreamProvider",
    "HistoryError",
    "Koala",
    "KoalaError",
    "Message",
    "NetworkError",
    "OpenAI",
    "OutputError",
    "ProtocolError",
    "ProviderModelMixin",
    "RequestSpec",
    "Role",
    "ServiceError",
    "TimeoutError",
    "UsageError",
    "__version__",
    "build_payload",
]

_LAZY = {
    "AsyncGeneratorProvider": "base",
    "ProviderModelMixin": "base",
    "Koala": "provider",
    "build_payload": "provider",
    "OpenAI": "openai",
    "HTTPStreamProvider": "streaming",
    "RequestSpec": "streaming",
}

#: ``--provider`` names and the classes they load (lazily, by module path).
PROVIDERS: dict[str, str] = {"koala": "provider:Koala", "openai": "openai:OpenAI"}


def __getattr__(name: str) -> Any:
    """Import the provider (and httpx) on first use only."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'koala_cli' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
