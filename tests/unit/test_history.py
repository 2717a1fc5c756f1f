"""History files: validation with FILE:LINE, tolerated quirks, locked appends, round-trip."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from conftest import HISTORY_BYTES, history_file
from hypothesis import given
from hypothesis import strategies as st

from koala_cli.errors import HistoryError, KoalaError
from koala_cli.history import append_turns, format_messages, load_history, parse_history
from koala_cli.messages import Message


def test_missing_file_is_empty(tmp_path: Path) -> None:
    assert load_history(tmp_path / "none.jsonl") == []


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="does not exist"):
        load_history(tmp_path / "no" / "such.jsonl")


def test_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="directory"):
        load_history(tmp_path)


def test_tolerated_quirks() -> None:
    data = b'\xef\xbb\xbf{"role":"user","content":"a"}\r\n\r\n  \n{"role":"assistant","content":"b","extra":1}'
    messages = parse_history(data, "h")
    assert [(m["role"], m["content"]) for m in messages] == [("user", "a"), ("assistant", "b")]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"role":"user","content":"a"}\n{oops\n', "h:2: not valid JSON"),
        (b'\n\n["a"]\n', "h:3: expected a JSON object"),
        (b'{"role":"bot","content":"a"}', "h:1: unknown role 'bot'"),
        (b'{"content":"a"}', 'h:1: missing "role"'),
        (b'{"role":"user","content":5}', 'h:1: "content" must be a string'),
        (b'{"role":"user"}', 'h:1: "content" must be a string'),
        (b'{"role":"user","content":"a"}\n{"role":"user","content":"\xff"}\n', "h:2: not valid UTF-8"),
    ],
)
def test_malformed_lines(data: bytes, why: str) -> None:
    with pytest.raises(HistoryError) as caught:
        parse_history(data, "h")
    assert str(caught.value).startswith(why)


def test_append_creates_private_file(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    append_turns(path, "q", "a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_history(path) == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_append_does_not_glue_onto_unterminated_line(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(b'{"role":"user","content":"x"}')
    append_turns(path, "q", "a")
    assert len(load_history(path)) == 3
    assert path.read_bytes().startswith(b'{"role":"user","content":"x"}\n{')


def test_append_keeps_earlier_bytes(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    before = b'{"role": "user", "content": "x", "keep": true}\r\n'
    path.write_bytes(before)
    append_turns(path, "q", "a")
    assert path.read_bytes().startswith(before)


def test_lone_surrogate_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    append_turns(path, "q\ud800", "a")
    assert load_history(path)[0]["content"] == "q\ud800"


messages_strategy = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text()}),
    max_size=8,
)


@given(messages_strategy)
def test_round_trip(messages: list[Message]) -> None:
    assert parse_history(format_messages(messages), "h") == messages


@given(st.binary(max_size=200))
def test_arbitrary_bytes_load_or_raise_history_error(data: bytes) -> None:
    try:
        result = parse_history(data, "h")
    except KoalaError as exc:
        assert isinstance(exc, HistoryError)
        assert str(exc).startswith("h:")
        return
    assert all(m["role"] in ("system", "user", "assistant") for m in result)


class _DiskFills:
    """``os.write`` that writes ``room`` bytes in all, then fails with ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.real = os.write

    def __call__(self, fd: int, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self.real(fd, bytes(data)[: self.room])
        self.room -= written
        return written


@pytest.mark.parametrize("room", [0, 1, 7, 40])
@pytest.mark.parametrize(
    "before", [HISTORY_BYTES, HISTORY_BYTES[:-1], b""], ids=["terminated", "unterminated", "empty"]
)
def test_disk_full_leaves_the_file_at_its_earlier_length(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, before: bytes, room: int
) -> None:
    path = history_file(tmp_path, before)
    monkeypatch.setattr(os, "write", _DiskFills(room))
    with pytest.raises(HistoryError) as caught:
        append_turns(path, "question", "an answer that does not fit")
    monkeypatch.undo()
    assert str(path) in str(caught.value)
    assert "No space left" in str(caught.value)
    assert path.read_bytes() == before


def test_failing_fsync_leaves_the_file_at_its_earlier_length(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = history_file(tmp_path)

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(HistoryError):
        append_turns(path, "question", "answer")
    monkeypatch.undo()
    assert path.read_bytes() == HISTORY_BYTES


@pytest.mark.parametrize("role", ['["user"]', '{"r": 1}', "3"])
def test_unhashable_or_odd_role_is_a_history_error(role: str) -> None:
    with pytest.raises(HistoryError, match="h:1: unknown role"):
        parse_history(f'{{"role": {role}, "content": "x"}}'.encode(), "h")


def test_null_content_is_named() -> None:
    with pytest.raises(HistoryError, match="not null"):
        parse_history(b'{"role": "assistant", "content": null}', "h")


def test_parsing_leaves_the_garbage_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A library call flips no process-wide state (issue 12): parsing makes only dicts of
    strings, which the cyclic collector does not track, so pausing it bought nothing."""
    import gc

    def refuse() -> None:
        raise AssertionError("parse_history switched the garbage collector")

    monkeypatch.setattr(gc, "disable", refuse)
    monkeypatch.setattr(gc, "enable", refuse)
    monkeypatch.setattr(gc, "freeze", refuse)
    assert len(parse_history(HISTORY_BYTES * 50, "h")) == len(parse_history(HISTORY_BYTES, "h")) * 50


def _whole_text_parse(data: bytes, name: str) -> list[Message]:
    """The reference: the whole file decoded as one string, split, each line by ``json``."""
    import codecs
    import json

    from koala_cli.history import validate_message

    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        number = data.count(b"\n", 0, exc.start) + 1
        raise HistoryError(f"{name}:{number}: not valid UTF-8") from None
    messages = []
    for number, raw in enumerate(text.split("\n"), 1):
        if not raw or raw.isspace():
            continue
        try:
            value = json.JSONDecoder().decode(raw)
        except json.JSONDecodeError as exc:
            raise HistoryError(f"{name}:{number}: not valid JSON ({exc.msg})") from None
        messages.append(validate_message(value, f"{name}:{number}"))
    return messages


_pieces = st.sampled_from(
    [
        b'{"role": "user", "content": "hi \\u00e9"}',
        '{"role":"assistant","content":"caf\u00e9 \U0001f428"}'.encode(),
        b'  {"role": "system", "content": ""}  ',
        b'{"role": "user", "content": "x"}\r',
        b'{"role": "user", "content": "x"} x',
        b'{"role": "user"}',
        b'{"role": "robot", "content": "x"}',
        b'{"role": "user", "content": 1}',
        b"[1, 2]",
        b"",
        b" \t",
        "\u00a0\u2028".encode(),
        b"\xef\xbb\xbf",
        b"\xff",
        b"\xe2\x82",
        b'{"role": "user", "content": "\\ud800"}',
        b'{"role": "user", "content": "a\x01b"}',
        b'{"role": "user", "content": "x", "role": "assistant"}',
        b"{",
        b"nul",
        b"NaN",
    ]
)


@given(st.lists(_pieces, max_size=8), st.booleans())
def test_line_by_line_parses_like_the_whole_text(lines: list[bytes], bom: bool) -> None:
    data = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines)
    try:
        expected: object = _whole_text_parse(data, "h")
    except HistoryError as exc:
        expected = str(exc)
    try:
        got: object = parse_history(data, "h")
    except HistoryError as exc:
        got = str(exc)
    assert got == expected
