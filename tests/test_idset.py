"""The compact id set behind resume: exact membership across spills, and its size."""

from __future__ import annotations

import pickle
import random

import numpy as np

from peerflow import idset
from peerflow.idset import IdSet, id_hash


def test_add_and_contains_across_spills_for_200k_ids() -> None:
    ids = [f"row-{i}" for i in range(200_000)]
    s = IdSet()
    for i, task_id in enumerate(ids):
        assert s.add(task_id)
        if i % 50_000 == 0:
            assert task_id in s and f"row-{i + 1}" not in s
    assert len(s) == 200_000
    assert sum(level.size for level in s._levels) >= 3 * idset._RECENT_MAX  # spilled, merged
    assert all(task_id in s for task_id in ids)
    assert not any(f"other-{i}" in s for i in range(20_000))
    assert not s.add("row-123") and len(s) == 200_000  # a repeat is not added twice
    assert 5 not in s  # only strings are members


def test_bulk_updates_and_array_lookups_agree_with_single_ones() -> None:
    rng = random.Random(7)
    present = [f"p{i}" for i in range(70_000)]
    s = IdSet(present[:1000])
    hashes = np.array([id_hash(t) for t in present], dtype=np.uint64)
    assert s.update_hashes(hashes) == 69_000  # the first 1,000 were there already
    assert len(s) == 70_000
    probe = rng.sample(present, 500) + [f"absent{i}" for i in range(500)]
    found = s.contains_many(np.array([id_hash(t) for t in probe], dtype=np.uint64))
    assert found.tolist() == [t in s for t in probe] == [True] * 500 + [False] * 500
    assert np.array_equal(s.to_array(), np.unique(hashes))
    again = pickle.loads(pickle.dumps(s))  # sent between Ray processes
    assert len(again) == 70_000 and "p69999" in again and "absent1" not in again


def test_a_sorted_array_becomes_a_level_without_a_copy() -> None:
    a = np.unique(np.array([id_hash(f"x{i}") for i in range(10_000)], dtype=np.uint64))
    s = IdSet()
    s.update_hashes(a, sorted_unique=True)
    assert s._levels[0] is a and "x42" in s and "y42" not in s


def test_bytes_per_id_stay_near_eight() -> None:
    n = 1_000_000
    s = IdSet()
    s.update_hashes(np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    for i in range(1000):
        s.add(f"late-{i}")
    per_id = s.nbytes() / len(s)
    assert per_id <= 8.1, per_id
    assert idset._RECENT_MAX * 60 / n < 4.0  # the unsorted part stays small next to 8 B/id
