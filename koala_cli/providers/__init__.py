"""The one registry of providers: the names ``--provider`` takes and the classes they load.

Everything that lists providers -- the CLI, completion scripts, the docs tests -- reads
``PROVIDERS``; the classes (and httpx with them) are imported only when one is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from .http import HTTPStreamProvider

__all__ = ["PROVIDERS", "load_provider"]

#: ``--provider`` names and the classes they load, as ``module:Class``.
PROVIDERS: dict[str, str] = {
    "koala": "koala_cli.providers.koala:Koala",
    "openai": "koala_cli.providers.openai:OpenAI",
}


def load_provider(name: str) -> type[HTTPStreamProvider]:
    """The provider class for a ``--provider`` name (case and surrounding blanks ignored)."""
    target = PROVIDERS.get(name.strip().lower())
    if target is None:
        raise UsageError(f"unknown provider {name!r} (known: {', '.join(PROVIDERS)})")
    module, _, attribute = target.partition(":")
    provider: type[HTTPStreamProvider] = getattr(import_module(module), attribute)
    return provider
