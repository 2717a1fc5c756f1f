"""The compact set of job keys that finds repeated ids and done jobs (``--resume``)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
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


@given(st.lists(st.text(max_size=3), max_size=60), st.integers(0, 40))
def test_it_behaves_as_a_set_before_during_and_after_the_spill(items: list[str], spill_at: int) -> None:
    keys = KeySet(spill_at=spill_at)
    seen: set[str] = set()
    for item in items:
        assert keys.add(item) == (item not in seen)
        seen.add(item)
        assert keys.spilled == (len(seen) > spill_at)
    assert len(keys) == len(seen)
    assert all(item in keys for item in seen)
    assert all(item + "\0" not in keys for item in seen if item + "\0" not in seen)


_SPILL = """
import os, resource, signal, sys
from koala_cli import keyset
keyset.CACHE_KIB = 16  # a small cache: the database's pages go to its file
if sys.argv[1] == "full":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # as a full disk: every write to a file fails
keys = keyset.KeySet(spill_at=100)
try:
    for number in range(50_000):
        assert keys.add(str(number)) and str(number) in keys
except keyset.KoalaError as exc:
    sys.exit(f"error: {exc}")
assert keys.spilled and "50000" not in keys and len(keys) == 50_000
for fd in os.listdir("/proc/self/fd"):
    try:
        print(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
def test_the_spilled_keys_leave_no_file_behind(tmp_path: Path) -> None:
    """SQLite unlinks its temporary file as soon as it is open: a kill -9 leaves nothing."""
    env = {**os.environ, "SQLITE_TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _SPILL, "disk"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    files = [line for line in done.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert len(files) == 1 and files[0].endswith(" (deleted)")  # in use while it ran, and already gone
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_when_spilling_is_a_koala_error(tmp_path: Path) -> None:
    env = {**os.environ, "SQLITE_TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _SPILL, "full"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(
        "error: cannot keep the job ids past 100 in a temporary file (SQLITE_TMPDIR, TMPDIR or /var/tmp): "
    )
    assert done.stderr.count("\n") == 1  # SQLite's reason ends it ("disk I/O error" for EFBIG)


def test_without_sqlite3_the_keys_stay_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sqlite3", None)  # as a Python built without it
    keys = KeySet(spill_at=2)
    assert all(keys.add(str(number)) for number in range(10))
    assert not keys.spilled and len(keys) == 10 and "9" in keys and not keys.add("9")
