"""Many threads at once: the invariants still hold at the end."""

import random
import threading

from bytecache import ByteCache, EvictionCause

from .conftest import FakeClock

THREADS = 8
OPS = 100_000 // THREADS


def _check_invariants(cache, maxsize):
    with cache._lock:
        held = cache._data
        assert cache.currsize == sum(e.weight for e in held.values()) <= maxsize
        assert len(cache._policy) == len(held)
        assert cache._flights == {}


def test_mixed_operations_from_eight_threads():
    maxsize = 5_000
    clock = FakeClock()
    removed = {cause: 0 for cause in EvictionCause}
    count_lock = threading.Lock()

    def on_evict(key, value, weight, cause):
        with count_lock:
            removed[cause] += 1

    for policy in ("tinylfu", "lru"):
        cache = ByteCache(maxsize, ttl=50, timer=clock, policy=policy, on_evict=on_evict)
        loads = []
        errors = []

        def worker(seed):
            rng = random.Random(seed)
            try:
                for _ in range(OPS):
                    key = rng.randrange(400)
                    op = rng.random()
                    if op < 0.45:
                        value = cache.get(key)
                        assert value is None or value[0] == key
                    elif op < 0.65:
                        cache.set(key, (key, seed), weight=rng.randint(1, 100))
                    elif op < 0.72:
                        cache.pop(key, None)
                    elif op < 0.99:
                        value = cache.get_or_load(key, lambda: loads.append(key) or (key, "loaded"), weight=rng.randint(1, 100))
                        assert value[0] == key
                    else:
                        clock.advance(1)  # racy on purpose: the clock only moves forward
            except Exception as exc:  # surfaced by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        _check_invariants(cache, maxsize)
        stats = cache.stats()
        assert stats.loads == len(loads) and stats.evictions_size > 0
        cache.expire()
        _check_invariants(cache, maxsize)
    assert removed[EvictionCause.SIZE] > 0 and removed[EvictionCause.EXPLICIT] > 0
