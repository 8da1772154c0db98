"""A set of task ids in about 8 bytes per id, so resume over 100 M rows fits in memory.

A Python `set[str]` costs about 90 B per short id (the string object plus its slot).
Here each id is reduced to a 64-bit blake2b hash and kept in sorted numpy arrays
(8 B each); only the newest additions sit in a small Python set until they are
sorted into the arrays. Arrays are merged like a log-structured tree (a new array
absorbs every older one no larger than twice its size), so adding n ids costs
O(n log n) in total and a lookup checks a handful of arrays.

Two different ids share a hash with probability about n^2 / 2^65: for 100 M ids,
about 3 in 10,000 runs would treat one unfinished row as finished. That is the price
of 8 bytes per id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

# Additions held as Python ints before they are sorted into an array: small enough to
# bound the set's overhead (~5 MB), large enough that merging is rare.
_RECENT_MAX = 1 << 16


def id_hash(task_id: str) -> int:
    """The 64-bit hash an id is stored as; stable across processes and runs."""
    return int.from_bytes(hashlib.blake2b(task_id.encode(), digest_size=8).digest(), "little")


class IdSet:
    """Add and test ids; no removal, no iteration over the original strings."""

    __slots__ = ("_count", "_levels", "_recent")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._recent: set[int] = set()
        self._levels: list[np.ndarray] = []  # sorted uint64, oldest (largest) first
        self._count = 0
        for task_id in ids:
            self.add(task_id)

    def __len__(self) -> int:
        return self._count

    def __contains__(self, task_id: object) -> bool:
        if not self._count or not isinstance(task_id, str):
            return False
        return self.contains_hash(id_hash(task_id))

    def contains_hash(self, h: int) -> bool:
        if h in self._recent:
            return True
        if not self._levels:
            return False
        key = np.uint64(h)
        for level in self._levels:
            i = int(level.searchsorted(key))
            if i < level.size and level[i] == key:
                return True
        return False

    def add(self, task_id: str) -> bool:
        """Add `task_id`; False if it was already there."""
        return self.add_hash(id_hash(task_id))

    def add_hash(self, h: int) -> bool:
        if self.contains_hash(h):
            return False
        self._recent.add(h)
        self._count += 1
        if len(self._recent) >= _RECENT_MAX:
            self._spill()
        return True

    def contains_many(self, hashes: np.ndarray) -> np.ndarray:
        """For an array of hashes, a boolean array: which of them are in the set."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        found = np.zeros(hashes.shape, dtype=bool)
        if not hashes.size:
            return found
        if self._recent:
            recent = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
            found |= np.isin(hashes, recent)
        for level in self._levels:
            i = level.searchsorted(hashes)
            np.minimum(i, level.size - 1, out=i)
            found |= level[i] == hashes
        return found

    def update_hashes(self, hashes: np.ndarray, *, sorted_unique: bool = False) -> int:
        """Add many hashes at once; returns how many were new.

        With `sorted_unique` (the caller promises a sorted array without repeats) the array
        becomes a level as it is, without a copy, when none of it is in the set yet: that is
        how a resumed run holds 100 M finished ids in 800 MB and no more.
        """
        a = np.asarray(hashes, dtype=np.uint64)
        if not sorted_unique:
            a = np.unique(a)
        if not a.size:
            return 0
        if self._count:
            new = ~self.contains_many(a)
            if not new.all():
                a = a[new]
        if a.size:
            self._count += int(a.size)
            self._push(a)
        return int(a.size)

    def to_array(self) -> np.ndarray:
        """Every stored hash as one sorted uint64 array (a copy), to send to another process."""
        parts = [*self._levels]
        if self._recent:
            parts.append(np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent)))
        if not parts:
            return np.empty(0, dtype=np.uint64)
        out = np.concatenate(parts)
        out.sort()
        return out

    def nbytes(self) -> int:
        """Memory held by the arrays and the recent set (approximate), for benchmarks."""
        return sum(level.nbytes for level in self._levels) + 60 * len(self._recent)

    def _spill(self) -> None:
        new = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
        new.sort()
        self._recent = set()
        self._push(new)

    def _push(self, new: np.ndarray) -> None:
        """Add a sorted level of hashes not in the set, merging smaller levels into it."""
        levels = self._levels
        while levels and levels[-1].size <= 2 * new.size:
            new = np.concatenate((levels.pop(), new))
            new.sort(kind="stable")
        levels.append(new)
