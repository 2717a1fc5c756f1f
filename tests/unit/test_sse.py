"""The SSE decoder against the WHATWG rules, and cut at every byte."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from koala_cli.errors import KoalaError, NetworkError, ProtocolError
from koala_cli.sse import SSEDecoder


def decode(*pieces: bytes) -> list[str]:
    decoder = SSEDecoder()
    events: list[str] = []
    for piece in pieces:
        events += decoder.feed(piece)
    decoder.close()
    return events


def test_spec_example_multiline_data() -> None:
    # WHATWG example: two data lines join with a newline; a comment is skipped.
    stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"
    assert decode(stream) == ["first event", "second event", " third event"]


def test_spec_example_empty_data_events() -> None:
    assert decode(b"data\n\ndata\ndata\n\ndata:\n\n") == ["", "\n", ""]


def test_data_lines_join_with_newline() -> None:
    assert decode(b"data: YHOO\ndata: +2\ndata: 10\n\n") == ["YHOO\n+2\n10"]


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending(eol: bytes) -> None:
    assert decode(b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol) == ["a\nb", "c"]


def test_cr_and_lf_split_across_pieces() -> None:
    assert decode(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n") == ["a", "b"]


def test_unicode_line_separators_are_not_line_ends() -> None:
    text = "a\u2028b\u2029c\x85d\x0be\x0cf"
    assert decode(f"data: {text}\n\n".encode()) == [text]


def test_comments_other_fields_and_no_space() -> None:
    assert decode(b":c\nevent: x\nid: 7\nretry: 10\ndata:x\nfoo: bar\n\n") == ["x"]


def test_blank_line_without_data_dispatches_nothing() -> None:
    assert decode(b"\n\n\nevent: ping\n\n") == []


def test_utf8_cut_inside_a_sequence() -> None:
    data = "data: é😀\n\n".encode()
    assert decode(*[data[i : i + 1] for i in range(len(data))]) == ["é😀"]


@pytest.mark.parametrize("tail", [b'data: "tail"', b'data: "tail"\n', b'data: "ta'])
def test_stream_ending_inside_an_event_is_an_error(tail: bytes) -> None:
    # WHATWG drops an unfinished event; koala also says so, rather than save a cut reply.
    with pytest.raises(NetworkError):
        decode(b'data: "whole"\n\n' + tail)


def test_stream_ending_after_a_comment_or_other_field_is_fine() -> None:
    assert decode(b'data: "whole"\n\n: bye') == ['"whole"']
    assert decode(b'data: "whole"\n\nevent: end\n') == ['"whole"']


def test_oversized_line_is_a_protocol_error() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(ProtocolError):
        decoder.feed(b"data: " + b"x" * 200)


def test_oversized_event_is_a_protocol_error() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(ProtocolError):
        for _ in range(50):
            decoder.feed(b"data: xxxxxxxx\n")


SAMPLE = (
    b': hello\r\ndata: "H\\u00e9llo"\r\n\r\ndata:x\rdata: y\r\r'
    + "data: ü\u2028😀\n\n".encode()
    + b"event: e\nid: 3\ndata\n\ndata: [DONE]\n\n"
)


@given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=12))
def test_cut_anywhere_decodes_the_same(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(SAMPLE)]
    pieces = [SAMPLE[a:b] for a, b in itertools.pairwise(bounds)]
    assert decode(*pieces) == decode(SAMPLE)


def test_cut_at_every_single_offset() -> None:
    whole = decode(SAMPLE)
    for i in range(len(SAMPLE) + 1):
        assert decode(SAMPLE[:i], SAMPLE[i:]) == whole, i


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
def test_arbitrary_bytes_decode_or_raise_protocol_error(data: bytes, cut: int) -> None:
    try:
        result = decode(data[:cut], data[cut:])
    except KoalaError as exc:
        assert isinstance(exc, (ProtocolError, NetworkError))
        return
    assert all(isinstance(event, str) for event in result)


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12),
        max_size=8,
    ),
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    st.sampled_from(["data: ", "data:"]),
)
def test_simple_runs_decode_like_the_line_loop(values: list[str], cuts: list[int], prefix: str) -> None:
    # Runs of one-line events take a regex fast path; any cut must give what one byte at a time gives.
    stream = "".join(f"{prefix}{v}\n\n" for v in values).encode()
    bounds = [0, *sorted(c for c in cuts if c <= len(stream)), len(stream)]
    pieces = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    one_by_one = decode(*[stream[i : i + 1] for i in range(len(stream))])
    expected = [v[1:] if prefix == "data:" and v.startswith(" ") else v for v in values]
    assert decode(*pieces) == one_by_one == expected


def test_decoder_caps_an_event_of_empty_data_lines() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    with pytest.raises(ProtocolError):
        for _ in range(100):  # 100 x 100 lines: ten times the cap once the newlines that join them count
            decoder.feed(b"data:\n" * 100)
