"""A UTF-16 surrogate pair split over two events is one character on stdout, as in --json.

JSON strings may carry a character outside the BMP as two ``\\uXXXX`` escapes, and a server
may put them into two events; koala.sh's own service does.  Each event alone decodes to a
lone surrogate, which UTF-8 cannot encode: the raw writer must join the halves.
"""

from __future__ import annotations

import io

import pytest

from koala_cli.output import TextWriter
from koala_cli.turn import Reply


def written(*batches: list[str], sanitize: bool = False) -> bytes:
    buffer = io.BytesIO()
    writer = TextWriter(buffer, sanitize=sanitize)
    writer.start("m")
    for batch in batches:
        writer.chunks(batch)
    writer.done(Reply(None, "m", 2, 4, 0.0, 0.0))
    return buffer.getvalue()


@pytest.mark.parametrize("sanitize", [False, True], ids=["pipe", "terminal"])
def test_pair_split_over_two_reads(sanitize: bool) -> None:
    assert written(["A\ud83d"], ["\ude00B"], sanitize=sanitize) == "A😀B\n".encode()


def test_pair_split_over_two_events_of_one_read() -> None:
    assert written(["A\ud83d", "\ude00B"]) == "A😀B\n".encode()


def test_pair_split_with_the_high_half_alone() -> None:
    assert written(["A"], ["\ud83d"], ["\ude00"], ["B"]) == "A😀B\n".encode()


def test_lone_halves_stay_replaced() -> None:
    assert written(["A\ud83d"], ["B"]) == b"A?B\n"
    assert written(["A\ude00B"]) == b"A?B\n"
    assert written(["A\ud83d"]) == b"A?\n"  # a high half at the very end is not lost


def test_the_high_half_waits_but_nothing_else_does() -> None:
    buffer = io.BytesIO()
    writer = TextWriter(buffer)
    writer.chunks(["Hi \ud83d"])
    assert buffer.getvalue() == b"Hi "  # flushed at once, the half held back
    writer.chunks(["\ude00"])
    assert buffer.getvalue() == "Hi 😀".encode()


def test_error_after_a_held_half_keeps_it() -> None:
    buffer = io.BytesIO()
    writer = TextWriter(buffer)
    writer.chunks(["x\ud83d"])
    writer.error("dropped", 3)
    assert buffer.getvalue() == b"x?\n"
