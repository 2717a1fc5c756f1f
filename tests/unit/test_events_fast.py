"""The OpenAI fast path of ``EventReader``: a run of plain delta events is found and decoded in
C, and must read exactly as the same events read one by one -- texts, how the stream ended,
the error and its message, the finish reason and usage the reader is left with."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from koala_cli import events as events_module
from koala_cli.events import EventReader
from koala_cli.sse import NamedEvent, SSEDecoder


@pytest.fixture(autouse=True, scope="module")
def fast_from_one_event() -> Iterator[None]:
    """Runs of any length take the fast path here (a short reply normally reads one by one)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(events_module, "_FAST_RUN", 1)
        yield


class OneByOne(EventReader):
    """The reference: every event through the general path."""

    __slots__ = ()

    def _plain_deltas(self, events: list[str], chunks: list[str]) -> int:
        return 0


def outcome(reader: EventReader, batches: list[list[str]]) -> tuple[object, ...]:
    texts: list[str] = []
    error: tuple[str, str] | None = None
    ended = False
    for events in batches:
        chunks, ended, exc = reader.read(events)
        texts += chunks
        if exc is not None:
            error = (type(exc).__name__, str(exc))
        if ended:
            break
    return texts, ended, error, reader.choices, reader.finish_reason, reader.usage


def same(batches: list[list[str]]) -> None:
    assert outcome(EventReader(), batches) == outcome(OneByOne(), batches)


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def delta(text: str, **extra: object) -> str:
    return compact({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}], **extra})


SHAPES = [  # plain deltas as real servers write them
    delta("hi"),
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini",'
    '"system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null,'
    '"finish_reason":null}]}',
    '{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"hi"}}],"created":1,"id":"x","model":"m",'
    '"object":"chat.completion.chunk","usage":null}',
    '{"id": "x", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": null}]}',
    '{"choices":[{"index":0,"delta":{"content":"h\\u00e9\\n\\"i\\\\","refusal":null}}],"obfuscation":"abc"}',
]


@pytest.mark.parametrize("shape", SHAPES)
def test_plain_deltas_take_the_fast_path(shape: str) -> None:
    chunks: list[str] = []
    reader = EventReader()
    assert reader._plain_deltas([shape] * 3, chunks) == 3
    assert chunks == [json.loads(shape)["choices"][0]["delta"]["content"]] * 3 and reader.choices
    same([[shape] * 3 + ["[DONE]"]])


def test_a_short_run_reads_one_by_one_and_a_long_one_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_module, "_FAST_RUN", 16)
    assert EventReader()._plain_deltas([SHAPES[1]] * 15, []) == 0
    assert EventReader()._plain_deltas([SHAPES[1]] * 16, []) == 16


def test_deltas_written_differently_in_one_run() -> None:
    """Shaped alike (one literal head and tail) or not: OpenAI's varying "obfuscation" field."""
    varying = [SHAPES[4].replace('"abc"', f'"{n}x"') for n in range(20)]
    chunks: list[str] = []
    assert EventReader()._plain_deltas([*varying, SHAPES[0], SHAPES[2], "[DONE]"], chunks) == 22
    assert len(chunks) == 22
    same([[*varying, SHAPES[0], "[DONE]"]])


@pytest.mark.parametrize(
    "event",
    [
        '{"text":"top","choices":[{"delta":{"content":"hi"}}]}',  # a top-level text wins
        '{"choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}]}',
        '{"choices":[{"delta":{"content":"hi"}}],"usage":{"total_tokens":3}}',
        '{"choices":[{"delta":{"content":"hi"}}],"error":{"message":"boom"}}',
        '{"choices":[{"delta":{"content":"hi"}},{"delta":{"content":"2nd"}}]}',
        '{"choices":[{"delta":{"content":"hi","content":"again"}}]}',
        '{"choices":[{"delta":{"content":"hi"},"delta":{"content":"2"}}]}',
        '{"choices":[{"delta":{"cont\\u0065nt":"x","content":"hi"}}]}',
        '{"choices":[{"delta":{"content":"bad \\q escape"}}]}',
        '{"choices":[{"delta":{"content":"\\ud800"}}]}',
        '{"choices":[{"delta":{"content":"hi"}}],"n":01}',
        '{"choices":[{"delta":{"content":"hi"}}]}x',
        '{"choices":[{"delta":{"content":"hi"}}]}\n{"choices":[{"delta":{"content":"hi"}}]}',
        NamedEvent('{"choices":[{"delta":{"content":"hi"}}]}', "error"),
        '{"choices":[{"delta":{"content":null}}]}',
        '{"choices":[{"delta":{}}]}',
    ],
)
def test_events_off_the_fast_path_read_as_before(event: str) -> None:
    plain = delta("a")
    for batch in ([event], [plain, event, plain], [plain, plain, event], [event, plain]):
        same([[*batch, "[DONE]"]])


# -- generated events: every shape the fast path must get right, and many it must refuse ------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "a\nb", 'q"', "\\", "\u2028", "\x00"]
)
_scalar = st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=5) | st.floats(allow_nan=False)
_keys = st.sampled_from(["id", "object", "model", "created", "text", "content", "usage", "error", "logprobs", "x"])

# Every strategy a draw uses is made once, here: one made inside a draw is built, validated and
# analysed afresh for each event (a list argument is not cached), which was most of the time an
# example took.  The strategies are the same, so the events drawn are too.
_content = st.one_of(_text, st.none())
_finish_reason = st.sampled_from([None, None, None, "stop", "length", ""])
_choice_count = st.sampled_from([1, 1, 1, 0, 2])
_top_keys = st.lists(_keys, max_size=3)
_one_in_six = st.integers(0, 5)
_separators = st.sampled_from([(",", ":"), (", ", ": "), (",", ": ")])


@st.composite
def openai_event(draw: st.DrawFn) -> str:
    content = draw(_content)
    delta_value: dict[str, object] = {} if content is None and draw(st.booleans()) else {"content": content}
    if draw(st.booleans()):
        delta_value["role"] = "assistant"
    choice: dict[str, object] = {"index": 0, "delta": delta_value}
    choice["finish_reason"] = draw(_finish_reason)
    choices = [choice] * draw(_choice_count)
    top: dict[str, object] = {key: draw(_scalar) for key in draw(_top_keys)}
    top["choices"] = choices
    if draw(_one_in_six) == 0:
        top["usage"] = {"total_tokens": 3}
    items = list(top.items())
    order = draw(st.permutations(range(len(items))))
    value = dict(items[i] for i in order)
    separators = draw(_separators)
    return json.dumps(value, separators=separators, ensure_ascii=draw(st.booleans()))


_junk = st.sampled_from(['"koala text"', "[DONE]", "not json", "{", '{"text":"t"}', "", '{"error":"boom"}'])
_shape = st.sampled_from(SHAPES)
_positions = [st.integers(0, len(event) - 1) for event in SHAPES]
_mutation_char = st.sampled_from([*'{}[]",:\\ nu0123e.-+tfaxc\n\t\u00e9'])
_how = st.sampled_from(["insert", "remove", "replace"])


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A plain delta with one character inserted, removed or replaced: JSON it may no longer be."""
    event = draw(_shape)
    at = draw(_positions[SHAPES.index(event)])
    char = draw(_mutation_char)
    how = draw(_how)
    if how == "insert":
        return event[:at] + char + event[at:]
    return event[:at] + ("" if how == "remove" else char) + event[at + 1 :]


_event = openai_event() | mutated() | _junk | _shape


@settings(max_examples=400)
@given(st.lists(st.lists(_event, max_size=8), min_size=1, max_size=4))
def test_the_fast_path_reads_like_one_by_one(batches: list[list[str]]) -> None:
    same(batches)


@settings(max_examples=400)
@given(st.lists(mutated(), min_size=1, max_size=4))
def test_broken_plain_deltas_read_like_one_by_one(events: list[str]) -> None:
    same([[SHAPES[0], *events, SHAPES[1]]])


@given(st.lists(_text, min_size=1, max_size=30), st.lists(st.integers(0, 4000), max_size=8), st.booleans())
def test_an_openai_stream_cut_anywhere_reads_the_same(texts: list[str], cuts: list[int], escape: bool) -> None:
    body = b"".join(b"data: " + json.dumps(json.loads(delta(t)), ensure_ascii=escape).encode() + b"\n\n" for t in texts)
    body += b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True) if a < b]
    decoder, reader, chunks = SSEDecoder(), EventReader(), []
    for piece in pieces:
        got, ended, error = reader.read(decoder.feed(piece))
        chunks += got
        assert error is None
    assert ended and reader.finish_reason == "stop"
    assert "".join(chunks) == "".join(texts)
