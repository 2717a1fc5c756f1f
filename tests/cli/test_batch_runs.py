"""koala at scale (issue 10) through `koala` in process: one connection pool per run, shards,
resume, the usage errors of --shard and --rate, and batch's output always strict JSON (issue 8).
What needs the real process -- a producer and a reader on pipes, the window that stops reading,
pacing measured against the clock, the progress line on a terminal, Ctrl-C with stdout
stalled -- is in tests/process/test_batch_scale.py.

The server is ``keepalive.KeepAlive``: it keeps connections open and counts them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke, jobs, one_line_error, strict_ndjson
from keepalive import Answer, KeepAlive, Request, echo


def batch(server: KeepAlive, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return invoke("batch", "--base-url", server.base_url, "--retries", "0", *args, stdin=stdin)


def key(record: dict[str, Any]) -> str:
    """How a result is known: its id, or (a job without one) its line."""
    return json.dumps(record["id"]) if "id" in record else f"line {record['line']}"


# --- one client, pooled connections --------------------------------------------------------


def test_batch_requests_share_a_pool_of_at_most_concurrency_connections(keepalive: KeepAlive) -> None:
    prompts = [f"prompt {n}" for n in range(24)]
    result = batch(keepalive, "--lines", "--concurrency", "4", stdin="\n".join(prompts).encode() + b"\n")
    assert result.returncode == 0, result.stderr
    records = strict_ndjson(result.stdout)
    assert [r["text"] for r in records] == [f"re: {p}" for p in prompts]
    assert len(keepalive.requests) == 24
    assert 1 <= keepalive.connections <= 4  # not one connection per job


def test_chat_turns_reuse_one_connection(keepalive: KeepAlive) -> None:
    result = invoke("chat", "--base-url", keepalive.base_url, stdin=b"one\ntwo\nthree\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"re: one\nre: two\nre: three\n"
    assert len(keepalive.requests) == 3
    assert keepalive.connections == 1


# --- shards and resume ---------------------------------------------------------------------


def _shard_input() -> bytes:
    records: list[dict[str, Any]] = []
    for n in range(45):
        if n % 3 == 0:
            records.append({"id": n, "prompt": f"p{n}"})
        elif n % 3 == 1:
            records.append({"id": f"s-{n}", "prompt": f"p{n}"})
        else:
            records.append({"prompt": f"p{n}"})  # no id: known by its line
    return jobs(*records)


def test_shards_partition_the_jobs_stably(keepalive: KeepAlive) -> None:
    stdin = _shard_input()
    everything = strict_ndjson(batch(keepalive, stdin=stdin).stdout)
    assert len(everything) == 45
    shards = []
    for k in (1, 2, 3):
        result = batch(keepalive, "--shard", f"{k}/3", stdin=stdin)
        assert result.returncode == 0, result.stderr
        shards.append([key(r) for r in strict_ndjson(result.stdout)])
    assert all(shards), "a shard got no job at all"
    merged = [k for shard in shards for k in shard]
    assert sorted(merged) == sorted(key(r) for r in everything)  # every job in exactly one shard
    again = batch(keepalive, "--shard", "2/3", stdin=stdin)
    assert [key(r) for r in strict_ndjson(again.stdout)] == shards[1]  # stable


def test_shard_then_resume_runs_only_that_shards_missing_jobs(keepalive: KeepAlive, tmp_path: Path) -> None:
    failing = {f"p{n}" for n in range(0, 45, 2)}  # about half of every shard

    def route(request: Request) -> Answer:
        if request.prompt in failing:
            return Answer(b"no", status=500, reason="Internal Server Error", headers={"Content-Type": "text/plain"})
        return echo(request)

    keepalive.route = route
    stdin = _shard_input()
    out = tmp_path / "shard1.jsonl"
    first = batch(keepalive, "--shard", "1/2", stdin=stdin)
    out.write_bytes(first.stdout)
    records = strict_ndjson(first.stdout)
    failed = {key(r) for r in records if not r["ok"]}
    assert failed and len(failed) < len(records)
    keepalive.route = echo
    keepalive.requests.clear()
    second = batch(keepalive, "--shard", "1/2", "--resume", str(out), stdin=stdin)
    assert second.returncode == 0, second.stderr
    rerun = strict_ndjson(second.stdout)
    assert {key(r) for r in rerun} == failed
    assert len(keepalive.requests) == len(failed)
    ok = {key(r) for r in [*records, *rerun] if r["ok"]}
    assert ok == {key(r) for r in records}  # the shard is now complete, each job once


@pytest.mark.parametrize("value", ["0/3", "4/3", "1/0", "x", "1/2/3", "-1/2"])
def test_a_bad_shard_is_a_usage_error(keepalive: KeepAlive, value: str) -> None:
    result = batch(keepalive, "--lines", "--shard", value, stdin=b"a\n")
    assert result.returncode == 2
    assert "--shard" in one_line_error(result)
    assert keepalive.requests == []


# --- usage errors of the rate ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["0/s", "5", "x/s", "5/h", "-1/m", "inf/s", "nan/s"])
def test_a_bad_rate_is_a_usage_error(keepalive: KeepAlive, value: str) -> None:
    result = batch(keepalive, "--lines", "--rate", value, stdin=b"a\n")
    assert result.returncode == 2
    assert "--rate" in one_line_error(result)
    assert keepalive.requests == []


# --- ids: strict JSON out, no collisions (issue 8) -----------------------------------------


def test_non_finite_ids_are_bad_lines_and_every_output_line_is_strict_json(keepalive: KeepAlive) -> None:
    stdin = (
        b'{"id": 1e400, "prompt": "a"}\n{"id": NaN, "prompt": "b"}\n{"id": -Infinity, "prompt": "c"}\n'
        b'{"id": [1, Infinity], "prompt": "d"}\n{"id": 5, "prompt": "e"}\n'
    )
    result = batch(keepalive, stdin=stdin)
    assert result.returncode == 2
    records = strict_ndjson(result.stdout)  # strict: fails on NaN or Infinity anywhere
    assert [r["ok"] for r in records] == [False, False, False, False, True]
    for record, line in zip(records[:4], (1, 2, 3, 4), strict=True):
        assert record["line"] == line
        assert record["error"]["exit_status"] == 2
        assert "id" in record["error"]["message"]
    assert keepalive.prompts() == ["e"]


def test_a_job_without_an_id_never_collides_with_an_explicit_one(keepalive: KeepAlive, tmp_path: Path) -> None:
    stdin = jobs({"id": 2, "prompt": "a"}, {"prompt": "b"}, {"id": 1, "prompt": "c"}, {"prompt": "d"})
    result = batch(keepalive, stdin=stdin)
    assert result.returncode == 0, result.stderr
    records = strict_ndjson(result.stdout)
    assert [r["text"] for r in records] == ["re: a", "re: b", "re: c", "re: d"]
    assert [key(r) for r in records] == ["2", "line 2", "1", "line 4"]
    assert "id" not in records[1] and "id" not in records[3]
    out = tmp_path / "out.jsonl"
    out.write_bytes(result.stdout)
    keepalive.requests.clear()
    again = batch(keepalive, "--resume", str(out), stdin=stdin)
    assert (again.returncode, again.stdout) == (0, b"")
    assert keepalive.requests == []  # resume knows the id-less jobs by their line


# --- ids past what is kept in memory -------------------------------------------------------


def test_ids_past_the_spill_are_told_apart_as_before(keepalive: KeepAlive, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``keyset.SPILL_AT`` ids the digests move to a temporary database: a repeat is still a bad line."""
    from koala_cli import keyset

    monkeypatch.setattr(keyset, "SPILL_AT", 3)
    ids = [1, 2, 3, 4, 5, 2, 6, 5, 7]
    result = batch(keepalive, "--concurrency", "1", stdin=jobs(*({"id": n, "prompt": f"p{n}"} for n in ids)))
    assert result.returncode == 2  # as for any bad line
    records = strict_ndjson(result.stdout)
    assert [(r.get("id"), r["ok"]) for r in records] == [(n, n != ids[i] or i not in (5, 7)) for i, n in enumerate(ids)]
    assert [r["line"] for r in records if not r["ok"]] == [6, 8]
    assert len(keepalive.requests) == 7


def test_resume_past_the_spill_skips_every_done_job(
    keepalive: KeepAlive, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from koala_cli import keyset

    monkeypatch.setattr(keyset, "SPILL_AT", 2)
    stdin = jobs(*({"id": n, "prompt": f"p{n}"} for n in range(10)))
    out = tmp_path / "out.jsonl"
    out.write_bytes(jobs(*({"id": n, "ok": True, "text": "re"} for n in range(0, 10, 3))))
    result = batch(keepalive, "--resume", str(out), stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in strict_ndjson(result.stdout)] == [1, 2, 4, 5, 7, 8]


def test_a_failing_spill_ends_the_batch_with_one_line(keepalive: KeepAlive, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from koala_cli import keyset

    class Full:
        def execute(self, *args: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

    def spill(disk: Any, tables: Any, limit: int) -> None:
        spill_to_a_database(disk, tables, limit)
        disk._db = Full()  # the disk fills after the spill

    spill_to_a_database = keyset._OnDisk.__init__
    monkeypatch.setattr(keyset, "SPILL_AT", 2)
    monkeypatch.setattr(keyset._OnDisk, "__init__", spill)
    result = batch(keepalive, "--concurrency", "1", stdin=jobs(*({"id": n, "prompt": f"p{n}"} for n in range(6))))
    assert one_line_error(result).endswith(
        "cannot keep the job ids past 2 in a temporary file (SQLITE_TMPDIR, TMPDIR or /var/tmp): "
        "database or disk is full"
    )
    assert result.returncode == 1
    assert [r["id"] for r in strict_ndjson(result.stdout)] == [0, 1, 2]  # what was done is written, whole lines
