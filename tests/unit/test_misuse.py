"""Issue 8: the library raises only KoalaErrors (UsageError for misuse), never prints a key, and
masks URL credentials the way httpx parses them; one-line messages are made inert."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from standin import StandIn

from koala_cli import Koala, KoalaError, OpenAI, UsageError
from koala_cli.text import inert, mask_secrets, mask_url

KEY = "sk-test-0123456789abcdef"
HI = [{"role": "user", "content": "hi"}]


def ask(provider: Any, model: Any = "gpt-4o-mini", **kwargs: Any) -> str:
    async def main() -> str:
        return str(await provider.create_async(model, **kwargs))

    return anyio.run(main)


@pytest.mark.parametrize("provider", [Koala, OpenAI])
@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user"}],
        [{"content": "hi"}],
        "hi",
        [None],
        [{"role": "user", "content": 5}],
        [{"role": 5, "content": "hi"}],
        [{"role": "wizard", "content": "hi"}],
        [["user", "hi"]],
        None,
        [],
        [{"role": "assistant", "content": "hi"}],
    ],
    ids=[
        "no-content",
        "no-role",
        "a-string",
        "none-item",
        "int-content",
        "int-role",
        "unknown-role",
        "list-item",
        "none",
        "empty",
        "last-not-user",
    ],
)
def test_badly_shaped_messages_are_usage_errors(server: StandIn, provider: Any, messages: Any) -> None:
    with pytest.raises(UsageError):
        ask(provider, messages=messages, base_url=server.base_url, retries=0)
    assert server.requests == []


@pytest.mark.parametrize("provider", [Koala, OpenAI])
@pytest.mark.parametrize(
    "options",
    [
        {"retries": -1},
        {"retries": "3"},
        {"retries": 1.5},
        {"timeout": -1},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"timeout": "60"},
        {"api_key": 5},
        {"model": 5},
        {"base_url": "localhost:8080"},
        {"base_url": 5},
    ],
    ids=repr,
)
def test_misused_options_are_usage_errors(server: StandIn, provider: Any, options: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {"messages": HI, "base_url": server.base_url, "retries": 0, **options}
    model = kwargs.pop("model", "gpt-4o-mini")
    with pytest.raises(UsageError):
        ask(provider, model, **kwargs)
    assert server.requests == []


@pytest.mark.parametrize("provider", [Koala, OpenAI])
@pytest.mark.parametrize("key", [KEY + "\x1b", KEY + "é", "sk-ключ", KEY + "\x00", KEY + "\tX", KEY + "\nX"])
def test_bad_key_is_a_usage_error_that_never_shows_it(server: StandIn, provider: Any, key: str) -> None:
    with pytest.raises(UsageError) as caught:
        ask(provider, messages=HI, base_url=server.base_url, retries=0, api_key=key)
    assert KEY not in str(caught.value) and "ключ" not in str(caught.value)
    assert server.requests == []


@pytest.mark.parametrize("provider", [Koala, OpenAI])
@pytest.mark.parametrize("key", [KEY + "\n", KEY + "\r\n", f" {KEY}\t"])
def test_key_with_surrounding_whitespace_is_stripped(server: StandIn, provider: Any, key: str) -> None:
    if provider is OpenAI:
        server.default.parts = [
            b'data: {"choices":[{"delta":{"content":"Hello"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
        ]
    ask(provider, model="m", messages=HI, base_url=server.base_url, retries=0, api_key=key)
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_key_ending_in_newline_never_appears_in_a_message() -> None:
    """Whatever fails, the message does not carry the key (here: nobody listens)."""
    with pytest.raises(KoalaError) as caught:
        ask(Koala, messages=HI, base_url="http://127.0.0.1:9", retries=0, api_key=KEY + "\n")
    assert KEY not in str(caught.value)


def test_idn_base_url_headers_are_ascii() -> None:
    spec = Koala.request_spec("m", HI, base_url="http://bücher.example")  # type: ignore[arg-type]
    for value in spec.headers.values():
        value.encode("ascii")


@pytest.mark.parametrize("provider", [Koala, OpenAI])
def test_idn_base_url_through_the_library(server: StandIn, provider: Any) -> None:
    """Sent as punycode, via the stand-in as a proxy so the name need not resolve."""
    if provider is OpenAI:
        server.default.parts = [
            b'data: {"choices":[{"delta":{"content":"Hello"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
        ]

    async def main() -> str:
        async with httpx.AsyncClient(proxy=server.base_url) as client:
            return str(
                await provider.create_async(
                    "gpt-4o-mini", HI, base_url="http://bücher.example:8", client=client, retries=0
                )
            )

    anyio.run(main)
    assert server.requests[0].path.startswith("http://xn--bcher-kva.example:8/")


# --- masking -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://bob:secret@host:8080/p", "http://***@host:8080/p"),
        ("http://bob:Pa@ss@host", "http://***@host"),
        ("http://bob:Pa ss@host", "http://***@host"),
        ("http://bob:Pa:ss@host:1", "http://***@host:1"),
        ("http://bob:Pa/ss@host:1", "http://***@host:1"),
        ("http://bob:Pa?ss@host:1", "http://***@host:1"),
        ("http://bob:Pa#ss@host:1", "http://***@host:1"),
        ("socks5://u:p@127.0.0.1:1080", "socks5://***@127.0.0.1:1080"),
        ("http://host:8080/users/@me", "http://host:8080/users/@me"),
        ("http://host/?q=a@b", "http://host/?q=a@b"),
        ("https://koala.sh", "https://koala.sh"),
        ("bob:secret@host:1", "***@host:1"),
        ("https://h/v1?key=AIza-secret&alt=sse", "https://h/v1?key=***&alt=sse"),
        ("https://h/p?api-version=1&api_key=s3cret", "https://h/p?api-version=1&api_key=***"),
        ("https://h/blob?sv=1&sig=abc%2Fdef#x", "https://h/blob?sv=1&sig=***#x"),
        ("https://h/p?monkey=1&keyboard=2", "https://h/p?monkey=1&keyboard=2"),
    ],
)
def test_mask_url_as_httpx_parses_it(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("cannot use proxy http://bob:Pa@ss@host:1: refused", "Pa@ss"),
        ("via proxy 'http://u:p:q@h:1'", "p:q"),
        ("two http://a:one@h and https://b:two@@k", "two@"),
    ],
)
def test_mask_secrets_in_free_text(text: str, secret: str) -> None:
    assert secret not in mask_secrets(text)
    assert "***@" in mask_secrets(text)


def test_inert_escapes_controls_and_keeps_the_text() -> None:
    hostile = "Bad\x1b]0;pwned\x07 \x9b2J\r\nnext\x7f\u202eevil\t."
    line = inert(hostile)
    assert all(ord(c) >= 0x20 and not 0x7F <= ord(c) < 0xA0 for c in line), line
    assert "\u202e" not in line
    assert "pwned" in line and "next" in line and "evil" in line
    assert "\\x1b" in line
    assert inert("plain text, ünïcode ✓") == "plain text, ünïcode ✓"


def test_a_bugs_traceback_never_shows_a_known_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from koala_cli.cli import _scrubbed_traceback, exits

    monkeypatch.setattr(exits, "_SECRETS", [])
    exits.hide(KEY)
    try:
        raise TypeError(f"headers {{'Authorization': 'Bearer {KEY}'}} via http://bob:hun@ter2@proxy:1 \x1b]0;x\x07")
    except TypeError as exc:
        _scrubbed_traceback(type(exc), exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "TypeError" in err and "Bearer ***" in err
    assert KEY not in err and "hun" not in err and "\x1b" not in err
