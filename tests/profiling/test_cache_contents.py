"""The exact measure the bytes gauge is checked against: a deep walk that counts shared objects once."""

from __future__ import annotations

import sys

from bytecache.measure import walk_sizeof

from profiling.cache_contents import deep_walk


class Dag:
    def __init__(self, payload):
        self.tasks = [payload, [float(i) for i in range(100)]]


def test_deep_walk_counts_what_the_entries_share_once():
    shared = "s" * 100_000
    a, b = Dag(shared), Dag(shared)
    walk = deep_walk([a, b, None])
    assert walk["entries"] == 2
    assert walk["walk_each"][:2] == [walk_sizeof(a), walk_sizeof(b)] and walk["walk_each"][2] is None
    # together: each DAG's own objects plus the shared string once
    assert walk["walk_bytes"] == walk_sizeof(a) + walk_sizeof(b) - walk_sizeof(shared)
    assert walk_sizeof(shared) >= sys.getsizeof(shared)
    assert deep_walk([])["walk_bytes"] == 0
