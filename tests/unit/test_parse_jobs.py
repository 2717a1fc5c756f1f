"""Batch input: every line becomes a job or a bad job in its place."""

from __future__ import annotations

from koala_cli.jobs import BadJob, Job, parse_jobs


def test_batch_bad_lines_keep_their_place_and_id() -> None:
    data = b'{"id": "a", "prompt": "x"}\n\xff\n{"id": "e", "prompt": ""}\n{"id": "a", "prompt": "again"}\n'
    jobs = list(parse_jobs(data, "in"))
    assert isinstance(jobs[0], Job)
    assert isinstance(jobs[1], BadJob) and "in:2: not valid UTF-8" in jobs[1].message
    assert isinstance(jobs[2], BadJob) and jobs[2].id == "e"
    assert isinstance(jobs[3], BadJob) and "more than once" in jobs[3].message
