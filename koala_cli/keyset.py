"""Job keys remembered compactly: the ids seen so far (a repeated id is a bad line) and the
jobs an earlier output already did (``--resume``), at about 8 bytes a key (stdlib only).

Telling every repeated id in a stream needs memory for every id seen -- no bounded structure
can tell a new id from an old one exactly -- so what this can do is keep that small: one
64-bit digest a key, in sorted arrays (a Python ``set`` of ints takes ~90 bytes a key, and
was most of what a 100,000-job run grew by).  Two different keys share a digest with
probability ~n²/2⁶⁵ (about 3·10⁻¹⁰ for 100,000 jobs): then the later is taken for the earlier.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from bisect import bisect_left

__all__ = ["KeySet", "digest"]

_TABLE_BITS = 10  # 1,024 sorted arrays: an insertion moves ~4 bytes a key / 1,024


def digest(key: str) -> int:
    """A key's stable 64-bit digest (the same on every machine and run: ``--shard`` uses it)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class KeySet:
    """A set of keys, kept as their digests: ``add`` says whether a key was new."""

    __slots__ = ("_size", "_tables")

    def __init__(self) -> None:
        self._tables = [array("Q") for _ in range(1 << _TABLE_BITS)]
        self._size = 0

    def add(self, key: str) -> bool:
        """Add ``key``; True if it was not in the set before."""
        value = digest(key)
        table = self._tables[value & ((1 << _TABLE_BITS) - 1)]
        index = bisect_left(table, value)
        if index < len(table) and table[index] == value:
            return False
        table.insert(index, value)
        self._size += 1
        return True

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        value = digest(key)
        table = self._tables[value & ((1 << _TABLE_BITS) - 1)]
        index = bisect_left(table, value)
        return index < len(table) and table[index] == value

    def __len__(self) -> int:
        return self._size

    def nbytes(self) -> int:
        """The memory it holds, in bytes."""
        return sys.getsizeof(self._tables) + sum(sys.getsizeof(table) for table in self._tables)
