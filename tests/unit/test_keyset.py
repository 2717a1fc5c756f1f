"""The compact set of job keys that finds repeated ids and done jobs (``--resume``)."""

from __future__ import annotations

import json
import random

from hypothesis import given
from hypothesis import strategies as st

from koala_cli.jobs import job_key
from koala_cli.keyset import KeySet, digest


def test_add_says_whether_a_key_is_new() -> None:
    keys = KeySet()
    assert not keys and len(keys) == 0 and "1" not in keys
    assert keys.add("1") and not keys.add("1")
    assert keys.add('"1"') and keys.add("line 1")
    assert "1" in keys and '"1"' in keys and "2" not in keys
    assert len(keys) == 3 and keys


@given(st.lists(st.text(max_size=6), max_size=60))
def test_it_behaves_as_a_set_of_its_keys(items: list[str]) -> None:
    keys = KeySet()
    seen: set[str] = set()
    for item in items:
        assert keys.add(item) == (item not in seen)
        seen.add(item)
    assert len(keys) == len(seen)
    assert all(item in keys for item in seen)
    assert all(item + "\0" not in keys for item in seen if item + "\0" not in seen)  # ('' and '\0' are both keys)


def test_a_lone_surrogate_in_an_id_has_a_key() -> None:
    key = job_key(json.loads('"\\ud800"'))
    keys = KeySet()
    assert keys.add(key) and key in keys and digest(key) != digest(job_key("\ufffd"))


def test_memory_is_about_one_digest_a_key() -> None:
    """A Python set of ints takes ~90 bytes a key; 100,000 jobs made that the growth of a run."""
    keys = KeySet()
    empty = keys.nbytes()
    rng = random.Random(7)
    count = 50_000
    for _ in range(count):
        keys.add(str(rng.getrandbits(64)))
    assert len(keys) == count
    assert (keys.nbytes() - empty) / count < 10  # 8 bytes of digest, a little growth room
