"""The batch pipeline's pure parts: keys, shards, the parser, the line splitter, resume keys."""

from __future__ import annotations

import json

import anyio
import pytest

from koala_cli.errors import UsageError
from koala_cli.jobs import (
    MAX_LINE,
    TOO_LONG,
    BadJob,
    Job,
    JobParser,
    Read,
    Shard,
    done_keys,
    input_lines,
    job_key,
)
from koala_cli.pipeline import Progress


def reader(data: bytes, size: int = 7) -> Read:
    """A Read over ``data`` that hands out at most ``size`` bytes a call (pieces cut anywhere)."""
    view = memoryview(data)
    position = 0

    async def read(wanted: int) -> bytes:
        nonlocal position
        piece = bytes(view[position : position + min(wanted, size)])
        position += len(piece)
        return piece

    return read


async def collect(data: bytes, size: int = 7) -> list[bytes]:
    return [line async for line in input_lines(reader(data, size))]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, 1 << 16])
def test_input_lines_cut_anywhere(size: int) -> None:
    data = b"\xef\xbb\xbfone\ntwo\r\n\nthree\xe2\x80\xa8x"
    assert anyio.run(collect, data, size) == [b"one", b"two\r", b"", b"three\xe2\x80\xa8x"]


def test_a_line_longer_than_the_limit_is_never_held() -> None:
    data = b"a\n" + b"x" * (MAX_LINE + 10) + b"\nb\n"
    assert anyio.run(collect, data, 1 << 20) == [b"a", TOO_LONG, b"b"]


def test_keys_are_canonical_and_refuse_non_finite_numbers() -> None:
    assert job_key({"b": 1, "a": "é"}) == job_key(json.loads('{"a": "\\u00e9", "b": 1}'))
    assert job_key(1) != job_key("1") != job_key(1.0)
    for value in (float("inf"), float("nan"), [1, float("-inf")]):
        with pytest.raises(ValueError):
            job_key(value)


def test_shards_partition_and_are_stable() -> None:
    keys = [job_key(n) for n in range(300)] + [f"line {n}" for n in range(300)]
    owners = [[k for k in keys if Shard(i, 4).holds(k)] for i in range(4)]
    assert sorted(k for shard in owners for k in shard) == sorted(keys)
    assert all(len(shard) > 100 for shard in owners)  # roughly even
    assert Shard.parse("2/4") == Shard(1, 4)
    assert [k for k in keys if Shard(1, 4).holds(k)] == owners[1]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "", "a/b", "1/2/3", " 1/2", "-1/2"])
def test_bad_shards(text: str) -> None:
    with pytest.raises(UsageError, match="--shard"):
        Shard.parse(text)


def test_parser_ids_lines_and_bad_lines() -> None:
    parser = JobParser("in")
    results = [
        parser.parse(1, b'{"id": 1, "prompt": "a"}'),
        parser.parse(2, b'{"prompt": "b"}'),
        parser.parse(3, b'{"id": 1e400, "prompt": "c"}'),
        parser.parse(4, b'{"id": NaN, "prompt": "d"}'),
        parser.parse(5, b'{"id": 1, "prompt": "again"}'),
        parser.parse(6, b"   "),
        parser.parse(7, TOO_LONG),
    ]
    first, second, infinite, nan, again, blank, long = results
    assert isinstance(first, Job) and first.ident() == {"id": 1}
    assert isinstance(second, Job) and second.ident() == {"line": 2} and not second.has_id
    assert isinstance(infinite, BadJob) and "finite" in infinite.message and "id" not in infinite.result()
    assert isinstance(nan, BadJob) and "NaN" in nan.message
    assert isinstance(again, BadJob) and again.result()["id"] == 1 and "more than once" in again.message
    assert blank is None
    assert isinstance(long, BadJob) and "longer than" in long.message
    for result in results:
        if isinstance(result, BadJob):
            json.dumps(result.result(), allow_nan=False)  # strict JSON


def test_parser_skips_other_shards_and_done_jobs() -> None:
    lines = [json.dumps({"id": n, "prompt": "p"}).encode() for n in range(40)]
    everything = [JobParser("in").parse(n, raw) for n, raw in enumerate(lines, 1)]
    done_data = b"".join(json.dumps({"id": n, "ok": n % 2 == 0}).encode() + b"\n" for n in range(40))
    done = anyio.run(done_keys, reader(done_data, 100))
    left = [JobParser("in", done=done).parse(n, raw) for n, raw in enumerate(lines, 1)]
    assert [j.id for j in left if j is not None] == [j.id for j in everything if j is not None and j.id % 2]
    halves = [[JobParser("in", shard=Shard(k, 2)).parse(n, raw) for n, raw in enumerate(lines, 1)] for k in (0, 1)]
    ids = [j.id for half in halves for j in half if j is not None]
    assert sorted(ids) == list(range(40))


def test_done_keys_know_jobs_without_an_id_by_their_line() -> None:
    data = b'{"line": 3, "ok": true}\n{"line": 4, "ok": false}\n{"id": 3, "ok": true}\nnot json\n'
    data += b'{"id": NaN, "ok": true}\n'
    done = anyio.run(done_keys, reader(data))
    parser = JobParser("in", done=done)
    assert parser.parse(3, b'{"prompt": "x"}') is None  # done (by its line)
    assert parser.parse(4, b'{"prompt": "x"}') is not None  # failed before: runs again
    assert parser.parse(9, b'{"id": 3, "prompt": "x"}') is None  # id 3 is done; line 3 is another job


def test_progress_line_with_a_total() -> None:
    progress = Progress(done=3, failed=1, in_flight=0, total=8)
    line = progress.line()
    assert line.startswith("3 done, 1 failed, 0 in flight, ")
    assert "4/8, ETA " in line
    assert "ETA" not in Progress(done=1).line()
