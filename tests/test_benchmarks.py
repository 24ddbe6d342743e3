"""The benchmark harness itself: offline references and replay must be right for the table to mean anything."""

import os
import sys

import cachetools
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import offline  # noqa: E402
import workloads  # noqa: E402
from replay import replay, weight_of  # noqa: E402

from bytecache import ByteCache  # noqa: E402


def brute_force_optimum(trace, capacity):
    """Best object hits over every eviction/bypass choice (tiny unit-weight traces only)."""
    best = 0

    def walk(i, cache, hits):
        nonlocal best
        if i == len(trace):
            best = max(best, hits)
            return
        key = trace[i][0]
        if key in cache:
            walk(i + 1, cache, hits + 1)
            return
        walk(i + 1, cache, hits)  # bypass
        if len(cache) < capacity:
            walk(i + 1, cache | {key}, hits)
        else:
            for victim in cache:
                walk(i + 1, (cache - {victim}) | {key}, hits)

    walk(0, frozenset(), 0)
    return best / len(trace)


@pytest.mark.parametrize("seed", range(5))
def test_belady_is_the_exact_optimum_for_unit_weights(seed):
    import random

    rng = random.Random(seed)
    trace = [(rng.randrange(5), 1) for _ in range(12)]
    assert offline.belady(trace, 2)[0] == pytest.approx(brute_force_optimum(trace, 2))


def test_replay_counts_hits_and_bytes_for_both_cache_kinds():
    trace = [("a", 10), ("b", 20), ("a", 10), ("c", 80), ("a", 10), ("b", 20)]
    ours = replay(trace, lambda: ByteCache(100, policy="lru"))
    theirs = replay(trace, lambda: cachetools.LRUCache(100, getsizeof=weight_of))
    assert ours == theirs
    hits = ours[0] * len(trace)
    assert hits == pytest.approx(2)  # "a" twice; "b" was evicted by "c"


def test_lru_gets_nothing_and_the_default_keeps_a_resident_set_on_the_loop_trace():
    trace = workloads.load_lirs("loop")[:20_000]
    assert len({k for k, _ in trace}) == 1011
    lru = replay(trace, lambda: ByteCache(256, policy="lru"))[0]
    default = replay(trace, lambda: ByteCache(256))[0]
    best = offline.belady(trace, 256)[0]
    assert lru == 0 and default >= 0.9 * best


def test_synthetic_workloads_are_deterministic():
    first = workloads.scheduler_sweep(20, 5)
    assert first == workloads.scheduler_sweep(20, 5)
    keys = {k for k, _ in first}
    assert len(keys) > 20  # redeploys made new versions
    assert all(w > 0 for _, w in first)
