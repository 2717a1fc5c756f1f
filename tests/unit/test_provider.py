"""The Koala provider against respx: exact requests, chunk sequences, errors. asyncio and trio."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from koala_cli import (
    BlockedError,
    Koala,
    KoalaError,
    NetworkError,
    ProtocolError,
    ServiceError,
    TimeoutError,
    UsageError,
)
from koala_cli.backoff import parse_retry_after
from koala_cli.events import chunk_from_event
from koala_cli.messages import Message
from koala_cli.providers.koala import build_payload

pytestmark = pytest.mark.anyio

URL = "https://koala.sh/api/gpt/"
HELLO: list[Message] = [{"role": "user", "content": "Hello, Koala!"}]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def sse_body(*events: str) -> bytes:
    return b"".join(b"data: " + e.encode() + b"\n\n" for e in events)


def stream(body: bytes, step: int = 0, content_type: str = "text/event-stream") -> httpx.Response:
    """A streamed response whose body arrives in pieces of ``step`` bytes (0: all at once)."""

    async def pieces() -> AsyncIterator[bytes]:
        if not step:
            yield body
            return
        for i in range(0, len(body), step):
            yield body[i : i + step]

    return httpx.Response(200, headers={"Content-Type": content_type}, stream=_Stream(pieces()))


class _Stream(httpx.AsyncByteStream):
    def __init__(self, pieces: AsyncIterator[bytes]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._pieces:
            yield piece


async def collect(**kwargs: object) -> list[str]:
    kwargs.setdefault("retries", 0)
    return [c async for c in Koala.create_async_generator("gpt-4o-mini", HELLO, **kwargs)]


def test_class_attributes() -> None:
    assert Koala.url == "https://koala.sh"
    assert Koala.api_endpoint == URL
    assert Koala.working is True
    assert Koala.supports_message_history is True
    assert Koala.default_model == "gpt-4o-mini"
    assert Koala.get_model("") == "gpt-4o-mini"
    assert Koala.get_model("some-new-model") == "some-new-model"


def test_payload_mapping() -> None:
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a2"},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "now"},
    ]
    assert build_payload(messages, "m") == {
        "input": "now Be brief. Answer in French.",
        "inputHistory": ["u1", "u2"],
        "outputHistory": ["a1", "a2"],
        "model": "m",
    }


def test_payload_needs_a_final_user_turn() -> None:
    with pytest.raises(UsageError):
        build_payload([], "m")
    with pytest.raises(UsageError):
        build_payload([{"role": "assistant", "content": "x"}], "m")


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ('"plain"', "plain"),
        ('"esc\\"aped\\n"', 'esc"aped\n'),
        ('"  "', "  "),
        ('{"text": "t"}', "t"),
        ('{"content": "c"}', "c"),
        ('{"choices": [{"delta": {"content": "d"}}]}', "d"),
        ('{"choices": [{"delta": {"role": "assistant"}}]}', None),
    ],
)
def test_chunk_from_event(data: str, text: str | None) -> None:
    assert chunk_from_event(data) == text


@pytest.mark.parametrize("data", ["{bad", "42", "null", '{"other": 1}', '["a"]', '"a" "b"'])
def test_chunk_from_event_rejects(data: str) -> None:
    with pytest.raises(ProtocolError):
        chunk_from_event(data)


def test_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("999") == 30.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@respx.mock
async def test_exact_request_and_chunks() -> None:
    route = respx.post(URL).mock(return_value=stream(sse_body('"Hel"', '"lo"', '" "', "[DONE]", '"after"')))
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q"},
    ]
    chunks = [c async for c in Koala.create_async_generator("", messages, retries=0)]
    assert chunks == ["Hel", "lo", " "]
    request = route.calls.last.request
    assert json.loads(request.content) == {
        "input": "q Be brief.",
        "inputHistory": ["u1"],
        "outputHistory": ["a1"],
        "model": "gpt-4o-mini",
    }
    headers = request.headers
    assert headers["accept"] == "text/event-stream"
    assert headers["content-type"] == "application/json"
    assert headers["origin"] == "https://koala.sh"
    assert headers["referer"].startswith("https://koala.sh")
    assert headers["flag-real-time-data"] == "false"
    assert len(headers["visitor-id"]) >= 16
    assert "Mozilla" in headers["user-agent"]
    assert "authorization" not in headers


@respx.mock
async def test_web_search_api_key_and_base_url_prefix() -> None:
    route = respx.post("http://127.0.0.1:8000/prefix/api/gpt/").mock(return_value=stream(sse_body('"ok"')))
    chunks = await collect(base_url="http://127.0.0.1:8000/prefix/", web_search=True, api_key="sekrit")
    assert chunks == ["ok"]
    headers = route.calls.last.request.headers
    assert headers["flag-real-time-data"] == "true"
    assert headers["authorization"] == "Bearer sekrit"


@pytest.mark.parametrize("step", [1, 2, 3, 7])
@respx.mock
async def test_body_cut_into_pieces(step: int) -> None:
    body = sse_body('"é😀"', '"a\u2028b"', '"\\u00e9"') + b"data: [DONE]\r\n\r\n"
    respx.post(URL).mock(return_value=stream(body, step))
    assert await collect() == ["é😀", "a\u2028b", "é"]


@respx.mock
async def test_caller_owned_client_is_used_and_left_open() -> None:
    respx.post(URL).mock(return_value=stream(sse_body('"x"')))
    async with httpx.AsyncClient() as client:
        assert await collect(client=client) == ["x"]
        assert not client.is_closed


@respx.mock
async def test_create_async_collects() -> None:
    respx.post(URL).mock(return_value=stream(sse_body('"a"', '"b"')))
    assert await Koala.create_async("gpt-4o-mini", HELLO, retries=0) == "ab"


@respx.mock
async def test_http_error_carries_status_and_excerpt() -> None:
    respx.post(URL).mock(return_value=httpx.Response(500, text="boom: database on fire"))
    with pytest.raises(ServiceError) as caught:
        await collect()
    assert caught.value.status == 500
    assert "database on fire" in caught.value.excerpt
    assert "500" in str(caught.value)


@respx.mock
async def test_cloudflare_challenge_is_named() -> None:
    page = "<html><head><title>Just a moment...</title></head></html>"
    respx.post(URL).mock(
        return_value=httpx.Response(403, text=page, headers={"Content-Type": "text/html", "cf-ray": "1"})
    )
    with pytest.raises(BlockedError) as caught:
        await collect()
    assert "Cloudflare" in str(caught.value)
    assert caught.value.exit_status == 4


@respx.mock
async def test_html_200_is_a_protocol_error() -> None:
    respx.post(URL).mock(return_value=httpx.Response(200, html="<html><title>Welcome</title></html>"))
    with pytest.raises(ProtocolError, match="Welcome"):
        await collect()


@respx.mock
async def test_non_streaming_json_output() -> None:
    respx.post(URL).mock(return_value=httpx.Response(200, json={"output": "whole reply"}))
    assert await collect() == ["whole reply"]


@respx.mock
async def test_json_without_text_is_a_protocol_error() -> None:
    respx.post(URL).mock(return_value=httpx.Response(200, json={"status": "queued"}))
    with pytest.raises(ProtocolError, match="queued"):
        await collect()


@respx.mock
async def test_malformed_event_after_good_chunks() -> None:
    respx.post(URL).mock(return_value=stream(sse_body('"good"', "{bad")))
    chunks: list[str] = []
    with pytest.raises(ProtocolError):
        async for chunk in Koala.create_async_generator("gpt-4o-mini", HELLO, retries=0):
            chunks.append(chunk)
    assert chunks == ["good"]


@respx.mock
async def test_connect_error() -> None:
    respx.post(URL).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(NetworkError, match=r"cannot connect to koala\.sh"):
        await collect()


@respx.mock
async def test_read_timeout() -> None:
    respx.post(URL).mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(TimeoutError):
        await collect()


@respx.mock
async def test_retries_then_succeeds() -> None:
    notices: list[str] = []
    route = respx.post(URL)
    route.side_effect = [
        httpx.Response(503, headers={"Retry-After": "0"}),
        httpx.Response(429, headers={"Retry-After": "0"}),
        stream(sse_body('"ok"')),
    ]
    assert await collect(retries=3, on_retry=notices.append) == ["ok"]
    assert route.call_count == 3
    assert len(notices) == 2
    assert "HTTP 503" in notices[0]
    assert "attempt 2 of 4" in notices[0]


@respx.mock
async def test_retries_exhausted_names_attempts() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(503, headers={"Retry-After": "0"}))
    with pytest.raises(ServiceError, match="after 3 attempts") as caught:
        await collect(retries=2)
    assert route.call_count == 3
    assert caught.value.attempts == 3


@respx.mock
async def test_other_statuses_are_not_retried() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(400, json={"error": "bad"}))
    with pytest.raises(ServiceError):
        await collect(retries=3)
    assert route.call_count == 1


def test_plain_http_client_trusts_no_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CA bundle is skipped only where TLS cannot happen, and then fails closed.
    import ssl

    from koala_cli.transport import make_client

    context = make_client(None, 5.0, "http://127.0.0.1:1/api/gpt/")._transport._pool._ssl_context  # type: ignore[attr-defined]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.get_ca_certs() == []
    secure = make_client(None, 5.0, "https://koala.sh/api/gpt/")._transport._pool._ssl_context  # type: ignore[attr-defined]
    assert secure.verify_mode == ssl.CERT_REQUIRED
    assert secure.cert_store_stats()["x509_ca"] > 0
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("HTTP_PROXY", "https://proxy.invalid:8443")
    proxied = make_client(None, 5.0, "http://127.0.0.1:1/api/gpt/")
    assert proxied._transport._pool._ssl_context.get_ca_certs()  # type: ignore[attr-defined]


class _Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


def _answer(draw: st.DrawFn) -> tuple[int, dict[str, str], list[bytes]]:
    body = draw(
        st.one_of(
            st.binary(max_size=300),
            st.lists(
                st.sampled_from(
                    [b"data: ", b'"x"', b"\n", b"\r", b"\r\n", b"[DONE]", b"{", b"}", b'"text":', b":", b"\xff", b"\\u"]
                ),
                max_size=40,
            ).map(b"".join),
        )
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
    bounds = [0, *cuts, len(body)]
    pieces = [body[a:b] for a, b in itertools.pairwise(bounds)]
    status = draw(st.sampled_from([200, 200, 200, 201, 204, 403, 404, 429, 500, 503]))
    headers: dict[str, str] = {}
    content_type = draw(
        st.sampled_from([None, "text/event-stream", "application/json", "text/html", "text/plain", "x/y; charset=zz"])
    )
    if content_type:
        headers["Content-Type"] = content_type
    encoding = draw(st.sampled_from([None, None, "gzip", "deflate", "identity"]))
    if encoding:
        headers["Content-Encoding"] = encoding
    if draw(st.booleans()):
        headers["cf-ray"] = "1"
    return status, headers, pieces


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.composite(_answer)())
def test_arbitrary_answers_give_chunks_or_a_koala_error(answer: tuple[int, dict[str, str], list[bytes]]) -> None:
    status, headers, pieces = answer

    # A plain-http base URL: no TLS context (and CA bundle) to build for each of the examples.
    base = "http://koala.test"

    async def main() -> list[str] | KoalaError:
        with respx.mock(assert_all_called=False) as router:
            router.post(f"{base}/api/gpt/").mock(
                return_value=httpx.Response(status, headers=headers, stream=_Pieces(pieces))
            )
            chunks: list[str] = []
            try:
                async for chunk in Koala.create_async_generator(
                    "gpt-4o-mini", HELLO, retries=0, timeout=5, base_url=base
                ):
                    chunks.append(chunk)
            except KoalaError as exc:
                return exc
            return chunks

    result = anyio.run(main)
    if isinstance(result, KoalaError):
        assert result.exit_status in (3, 4, 5), repr(result)
        assert "\n" not in str(result)
    else:
        assert 200 <= status < 300
        assert all(isinstance(chunk, str) and chunk for chunk in result)
