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
from .messages import DEFAULT_MODEL, Message, Role
from .providers import PROVIDERS

if TYPE_CHECKING:
    from .providers.base import AsyncGeneratorProvider, ProviderModelMixin, RequestSpec
    from .providers.http import HTTPStreamProvider
    from .providers.koala import Koala, build_payload
    from .providers.openai import OpenAI

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
    "AsyncGeneratorProvider": "providers.base",
    "ProviderModelMixin": "providers.base",
    "RequestSpec": "providers.base",
    "HTTPStreamProvider": "providers.http",
    "Koala": "providers.koala",
    "build_payload": "providers.koala",
    "OpenAI": "providers.openai",
}


def __getattr__(name: str) -> Any:
    """Import the provider (and httpx) on first use only."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'koala_cli' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
