"""What real servers do (issue 9): error events, finish reasons, message order, URL rules."""

from __future__ import annotations

import json

import pytest

from koala_cli.errors import NetworkError, ServiceError, UsageError
from koala_cli.events import EventReader
from koala_cli.messages import Message
from koala_cli.providers.koala import build_payload, endpoint_url
from koala_cli.providers.openai import OpenAI, chat_completions_url, models_url
from koala_cli.sse import SSEDecoder


def read(body: bytes) -> tuple[list[str], EventReader, Exception | None]:
    """Decode ``body`` whole and read its events, as ``answers.event_batches`` does."""
    reader = EventReader()
    chunks, ended, error = reader.read(SSEDecoder().feed(body))
    if error is None and not ended:
        error = reader.end()
    return chunks, reader, error


def choice(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    event = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(event).encode() + b"\n\n"


@pytest.mark.parametrize(
    "event",
    [
        b'data: {"error": {"message": "upstream exploded", "type": "server_error", "code": "502"}}\n\n',
        b'event: error\ndata: {"error": {"message": "upstream exploded", "code": 502}}\n\n',
        b'event: error\ndata: "upstream exploded"\n\n',
        b"event: error\ndata: upstream exploded\n\n",
        b'event: error\ndata: {"message": "upstream exploded"}\n\n',
    ],
)
def test_an_error_event_ends_the_reply_as_a_service_error(event: bytes) -> None:
    chunks, _, error = read(b'data: "partial "\n\n' + event + b'data: "never"\n\n')
    assert chunks == ["partial "]
    assert isinstance(error, ServiceError) and error.exit_status == 4
    assert "upstream exploded" in str(error)
    assert '{"' not in str(error)


def test_the_error_code_is_named_once() -> None:
    _, _, error = read(b'data: {"error": {"message": "rate limited", "code": "rate_limit"}}\n\n')
    assert str(error).endswith("rate limited (code rate_limit)")


def test_other_named_events_still_carry_text() -> None:
    chunks, _, error = read(b'event: message\ndata: "a"\n\nevent: delta\ndata: "b"\n\ndata: "c"\n\n')
    assert (chunks, error) == (["a", "b", "c"], None)


def test_an_event_name_does_not_leak_into_the_next_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: error\n") == []
    events = decoder.feed(b'data: "x"\n\ndata: "y"\n\n')
    assert [getattr(e, "type", None) for e in events] == ["error", None]


@pytest.mark.parametrize("finish", ["stop", "length", "content_filter", "tool_calls"])
def test_a_finished_stream_passes_and_says_why(finish: str) -> None:
    chunks, reader, error = read(choice("Hi") + choice(None, finish) + b"data: [DONE]\n\n")
    assert (chunks, reader.finish_reason, error) == (["Hi"], finish, None)


@pytest.mark.parametrize("done", [b"data: [DONE]\n\n", b""])
def test_a_stream_that_never_says_it_finished_is_cut_off(done: bytes) -> None:
    chunks, reader, error = read(choice("e riv") + choice(None) + done)
    assert chunks == ["e riv"] and reader.finish_reason is None
    assert isinstance(error, NetworkError) and "cut off" in str(error)


def test_koala_sh_streams_need_no_finish_reason() -> None:
    assert read(b'data: "Hi"\n\ndata: [DONE]\n\n')[2] is None
    assert read(b'data: "Hi"\n\n')[2] is None


def test_usage_is_kept() -> None:
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}\n\n'
    _, reader, error = read(choice("x", "stop") + usage + b"data: [DONE]\n\n")
    assert error is None and reader.usage == {"prompt_tokens": 3, "completion_tokens": 1}


HISTORY: list[Message] = [
    {"role": "system", "content": "From the file."},
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "a1"},
    {"role": "system", "content": "From -s."},
    {"role": "user", "content": "q2"},
]


def test_openai_sends_system_messages_first_in_order() -> None:
    body = OpenAI.body(HISTORY, "m")
    assert [m["role"] for m in body["messages"]] == ["system", "system", "user", "assistant", "user"]  # type: ignore[index]
    assert [m["content"] for m in body["messages"]][:2] == ["From the file.", "From -s."]  # type: ignore[index]


def test_koala_mapping_is_unchanged_but_an_empty_system_adds_nothing() -> None:
    assert build_payload(HISTORY, "m")["input"] == "q2 From the file. From -s."
    empty: list[Message] = [{"role": "system", "content": ""}, {"role": "user", "content": "q1"}]
    assert build_payload(empty, "m")["input"] == "q1"


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434/v1/chat/completions"),
        ("http://127.0.0.1:11434/", "http://127.0.0.1:11434/v1/chat/completions"),
        ("http://127.0.0.1:11434/v1/", "http://127.0.0.1:11434/v1/chat/completions"),
        (
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
        ),
        (
            "https://x.openai.azure.com/openai/deployments/d?api-version=2024-06-01",
            "https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-06-01",
        ),
        ("http://h:1/v1#frag", "http://h:1/v1/chat/completions"),
    ],
)
def test_openai_base_url_is_the_api_root(base: str, url: str) -> None:
    assert chat_completions_url(base) == url
    assert models_url(base) == url.replace("/chat/completions", "/models")


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://koala.sh", "https://koala.sh/api/gpt/"),
        ("http://h:1/prefix/", "http://h:1/prefix/api/gpt/"),
        ("http://h:1/p?token=1#x", "http://h:1/p/api/gpt/?token=1"),
    ],
)
def test_koala_endpoint_keeps_a_query_and_drops_a_fragment(base: str, url: str) -> None:
    assert endpoint_url(base) == url


def test_openai_has_no_default_model() -> None:
    with pytest.raises(UsageError, match="-m"):
        OpenAI.get_model("")
    assert OpenAI.get_model("llama") == "llama"
