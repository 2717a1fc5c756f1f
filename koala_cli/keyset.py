"""Job keys remembered compactly: the ids seen so far (a repeated id is a bad line) and the
jobs an earlier output already did (``--resume``), in bounded memory (stdlib only).

Telling every repeated id in a stream needs a record of every id seen, so what can be bounded
is the memory that record takes.  Each key is one 64-bit digest, kept in sorted arrays (~8.5
bytes a key; a Python ``set`` of ints takes ~90, and was most of what a 100,000-job run grew
by) up to ``SPILL_AT`` keys (~2 MiB); past that, every digest moves to a private temporary
SQLite database, whose page cache is bounded (``CACHE_KIB``) and whose file SQLite unlinks as
soon as it is open, so nothing is left behind whatever ends the process; a file that cannot
be written is a ``KoalaError`` (the run ends, its results so far written).  Two different keys
share a digest with probability ~n²/2⁶⁵ (about 3·10⁻¹⁰ for 100,000 jobs, 3·10⁻⁸ for a
million): then the later is taken for the earlier.
"""

from __future__ import annotations

import hashlib
import heapq
import sys
from array import array
from bisect import bisect_left
from typing import TYPE_CHECKING

from .errors import KoalaError

if TYPE_CHECKING:
    import sqlite3

__all__ = ["CACHE_KIB", "SPILL_AT", "KeySet", "digest"]

_TABLE_BITS = 10  # 1,024 sorted arrays: an insertion moves ~4 bytes a key / 1,024
SPILL_AT = 1 << 18  # keys kept in memory (~2 MiB) before all of them go to a temporary file
CACHE_KIB = 2048  # the temporary database's page cache (SQLite's default size)
_SIGNED = 1 << 63  # SQLite's integers are signed: digests are shifted into their range


def digest(key: str) -> int:
    """A key's stable 64-bit digest (the same on every machine and run: ``--shard`` uses it)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class KeySet:
    """A set of keys, kept as their digests: ``add`` says whether a key was new."""

    __slots__ = ("_disk", "_limit", "_size", "_tables")

    def __init__(self, *, spill_at: int | None = None) -> None:
        self._tables = [array("Q") for _ in range(1 << _TABLE_BITS)]
        self._size = 0
        self._limit = SPILL_AT if spill_at is None else spill_at
        self._disk: _OnDisk | None = None

    def add(self, key: str) -> bool:
        """Add ``key``; True if it was not in the set before."""
        value = digest(key)
        if self._disk is not None:
            new = self._disk.add(value)
        else:
            table = self._tables[value & ((1 << _TABLE_BITS) - 1)]
            index = bisect_left(table, value)
            new = index == len(table) or table[index] != value
            if new:
                table.insert(index, value)
        self._size += new
        if self._size > self._limit and self._disk is None:
            self._spill()
        return new

    def _spill(self) -> None:
        try:
            self._disk = _OnDisk(self._tables, self._limit)
        except ImportError:  # a Python built without sqlite3: the keys stay in memory
            self._limit = sys.maxsize
        else:
            self._tables = []

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        value = digest(key)
        if self._disk is not None:
            return value in self._disk
        table = self._tables[value & ((1 << _TABLE_BITS) - 1)]
        index = bisect_left(table, value)
        return index < len(table) and table[index] == value

    def __len__(self) -> int:
        return self._size

    @property
    def spilled(self) -> bool:
        """Whether the keys are in the temporary database now."""
        return self._disk is not None

    def nbytes(self) -> int:
        """The memory the arrays hold, in bytes (the database's cache is at most ``CACHE_KIB``)."""
        return sys.getsizeof(self._tables) + sum(sys.getsizeof(table) for table in self._tables)


class _OnDisk:
    """Digests in a private temporary SQLite database ("" as its name): pages beyond the cache
    go to a file in SQLITE_TMPDIR or TMPDIR that is already unlinked."""

    def __init__(self, tables: list[array[int]], limit: int) -> None:
        import sqlite3

        self._error, self._limit = sqlite3.Error, limit
        try:
            self._db: sqlite3.Connection = sqlite3.connect("", isolation_level=None)
            for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_KIB}"):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.execute("CREATE TABLE digest (value INTEGER PRIMARY KEY)")
            self._db.execute("BEGIN")
            merged = heapq.merge(*tables)  # in order: the B-tree is filled by appending
            self._db.executemany("INSERT INTO digest VALUES (?)", ((value - _SIGNED,) for value in merged))
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._failed(exc) from None

    def add(self, value: int) -> bool:
        return self._run("INSERT OR IGNORE INTO digest VALUES (?)", value).rowcount == 1

    def __contains__(self, value: int) -> bool:
        return self._run("SELECT 1 FROM digest WHERE value = ?", value).fetchone() is not None

    def _run(self, statement: str, value: int) -> sqlite3.Cursor:
        try:
            return self._db.execute(statement, (value - _SIGNED,))
        except self._error as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: sqlite3.Error) -> KoalaError:
        where = "SQLITE_TMPDIR, TMPDIR or /var/tmp"
        return KoalaError(f"cannot keep the job ids past {self._limit:,} in a temporary file ({where}): {exc}")
