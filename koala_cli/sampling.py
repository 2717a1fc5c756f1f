"""Sampling options for OpenAI-compatible servers: ``--temperature``, ``--top-p``,
``--max-tokens``, ``--seed``, ``--stop`` and ``-o KEY=VALUE``.

They become an ``options`` mapping merged into the request body.  Lowest first: the config's
``options`` tables, then ``-o`` assignments, then the named flags.  The koala.sh request has no
such fields, so any option with that provider is refused, naming it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

from .errors import UsageError

__all__ = ["FLAGS", "build_options", "parse_assignment", "refuse_options"]

#: The request field of each named flag.
FLAGS = {
    "temperature": "--temperature",
    "top_p": "--top-p",
    "max_tokens": "--max-tokens",
    "seed": "--seed",
    "stop": "--stop",
}
RESERVED = {"model": "-m/--model", "messages": "the prompt", "stream": "nothing: koala always streams"}


def parse_assignment(text: str) -> tuple[str, object]:
    """``KEY=VALUE``; VALUE as JSON when it parses (``0.2``, ``true``, ``["a"]``), else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"-o takes KEY=VALUE, not {text!r}")
    check_key(key, "-o")
    try:  # NaN and Infinity are not JSON a server accepts, nested too deeply none can read
        value: object = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):
        value = raw
    return key, value


def _not_json(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")


def check_key(key: str, where: str) -> None:
    if key in RESERVED:
        raise UsageError(f"{where} cannot set {key!r} (use {RESERVED[key]})")


def build_options(
    *,
    base: Mapping[str, object] | None = None,
    assignments: Sequence[str] = (),
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
) -> dict[str, object]:
    """The options of a run: ``base`` (the config's), then ``-o``, then the named flags."""
    options: dict[str, object] = dict(base or {})
    for text in assignments:
        key, value = parse_assignment(text)
        options[key] = value
    if temperature is not None:
        options["temperature"] = _finite("--temperature", temperature)
    if top_p is not None:
        options["top_p"] = _finite("--top-p", top_p)
    if max_tokens is not None:
        if max_tokens < 1:
            raise UsageError(f"--max-tokens must be 1 or more, not {max_tokens}")
        options["max_tokens"] = max_tokens
    if seed is not None:
        options["seed"] = seed
    if stop:
        options["stop"] = list(stop)
    return options


def _finite(flag: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{flag} must be a number of 0 or more, not {value:g}")
    return value


def refuse_options(options: Mapping[str, object], provider: str, origin: Mapping[str, str] | None = None) -> None:
    """With a provider that takes no sampling options, name the first one given.

    ``origin`` maps a key to where it came from (a profile), when not the command line.
    """
    for key in options:
        where = (origin or {}).get(key) or FLAGS.get(key) or f"-o {key}"
        raise UsageError(
            f"{where}: the {provider} provider takes no sampling options (use --provider openai, or a profile with it)"
        )
