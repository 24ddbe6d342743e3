"""ByteCache's mapping contract, weighing, TTL, stats and callbacks."""

import logging
import math

import pytest

from bytecache import ByteCache, CacheStats, EvictionCause

from .conftest import snapshot


def test_is_a_mutable_mapping_like_cachetools():
    cache = ByteCache(100, getsizeof=len)
    cache["a"] = "xx"
    cache["b"] = "yyy"
    assert cache["a"] == "xx" and "b" in cache and "z" not in cache
    assert len(cache) == 2 and set(cache) == {"a", "b"}
    assert cache.currsize == 5 and cache.maxsize == 100 and cache.getsizeof("abcd") == 4
    assert cache.get("z", 7) == 7
    assert cache.pop("a") == "xx" and cache.pop("a", None) is None
    with pytest.raises(KeyError):
        cache.pop("a")
    del cache["b"]
    with pytest.raises(KeyError):
        cache["b"]
    with pytest.raises(KeyError):
        del cache["b"]
    assert cache.currsize == 0 and len(cache) == 0
    assert cache.setdefault("c", "z") == "z" and cache["c"] == "z"
    cache.update({"d": "1234"})
    assert dict(cache) == {"c": "z", "d": "1234"}


def test_default_weight_is_one_per_entry():
    cache = ByteCache(3)
    for key in "abcd":
        cache[key] = object()
    assert cache.currsize == 3 and len(cache) == 3


def test_missing_hook_is_called_like_cachetools():
    class Defaulting(ByteCache):
        def __missing__(self, key):
            return f"made-{key}"

    assert Defaulting(10)["k"] == "made-k"


def test_set_with_explicit_weight_does_not_call_getsizeof():
    calls = []
    cache = ByteCache(1000, getsizeof=lambda v: calls.append(v) or 1)
    cache.set("k", "v", weight=400)
    assert cache.weight_of("k") == 400 and cache.currsize == 400 and calls == []


def test_replacing_a_value_adjusts_currsize_and_reports_replaced():
    events = []
    cache = ByteCache(100, getsizeof=len, on_evict=lambda *e: events.append(e))
    cache["k"] = "aaaa"
    cache["k"] = "bb"
    assert cache.currsize == 2 and cache.weight_of("k") == 2
    assert events == [("k", "aaaa", 4, EvictionCause.REPLACED)]


def test_too_heavy_value_is_rejected_and_the_old_value_kept():
    cache = ByteCache(10, getsizeof=len)
    cache["k"] = "abc"
    before = snapshot(cache)
    with pytest.raises(ValueError, match=r"weighs 11 bytes, more than maxsize 10"):
        cache["k"] = "x" * 11
    assert snapshot(cache) == before


def test_size_string_maxsize_and_no_cap():
    assert ByteCache("1.5 KiB").maxsize == 1536
    unbounded = ByteCache(None, getsizeof=len)
    for i in range(1000):
        unbounded[i] = "x" * 100
    assert unbounded.currsize == 100_000 and len(unbounded) == 1000 and unbounded.stats().evictions_size == 0


def test_stats_count_hits_misses_and_evictions():
    cache = ByteCache(2, policy="lru")
    cache["a"] = 1
    cache["a"], cache.get("nope"), cache.get("a")
    cache["b"] = 2
    cache["c"] = 3
    stats = cache.stats()
    assert isinstance(stats, CacheStats)
    assert (stats.hits, stats.misses, stats.evictions_size, stats.entries, stats.currsize) == (2, 1, 1, 2, 2)
    assert stats.hit_ratio == pytest.approx(2 / 3)
    with pytest.raises(Exception):
        stats.hits = 0  # frozen
    cache.reset_stats()
    assert cache.stats().hits == 0 and cache.stats().entries == 2


def test_contains_peek_and_weight_of_do_not_count_or_touch():
    cache = ByteCache(2, policy="lru")
    cache["a"], cache["b"] = 1, 2
    assert "a" in cache and cache.weight_of("a") == 1 and cache.peek("a") == 1 and cache.peek("z", 0) == 0
    cache["c"] = 3  # "a" is still least recently used: `in` and weight_of did not touch it
    assert "a" not in cache and cache.stats().hits == 0 and cache.stats().misses == 0


# -- idle TTL ------------------------------------------------------------------------------
def test_idle_ttl_expires_unused_entries_and_reads_extend_life(clock):
    cache = ByteCache(100, ttl=10, timer=clock)
    cache["read"] = 1
    cache["idle"] = 2
    clock.advance(6)
    assert cache["read"] == 1
    clock.advance(6)  # "idle" unused for 12 s, "read" for 6 s
    assert cache.get("idle") is None and "idle" not in cache
    assert cache["read"] == 1
    assert cache.expire() == [("idle", 2, 1)]
    assert cache.currsize == 1 and cache.stats().evictions_expired == 1


def test_expired_entry_is_never_returned_even_before_removal(clock):
    cache = ByteCache(100, ttl=5, timer=clock)
    cache["k"] = "v"
    clock.advance(5)
    assert cache.get("k") is None and cache.peek("k") is None
    with pytest.raises(KeyError):
        cache["k"]
    with pytest.raises(KeyError):
        cache.weight_of("k")
    assert list(cache) == [] and len(cache) == 0


def test_writes_expire_before_they_evict_for_size(clock):
    events = []
    cache = ByteCache(3, ttl=10, timer=clock, on_evict=lambda k, v, w, cause: events.append((k, cause)))
    cache["old"] = 1
    clock.advance(5)
    cache["a"], cache["b"] = 1, 1
    clock.advance(6)  # only "old" has been idle for 10 s
    cache["c"] = 1  # full: the expired entry makes the room, no live entry is evicted
    assert events == [("old", EvictionCause.EXPIRED)]
    assert set(cache) == {"a", "b", "c"} and cache.stats().evictions_size == 0


def test_expiry_inspects_only_the_expired_prefix(clock):
    from collections import OrderedDict

    inspected = []

    class CountingStorage(OrderedDict):
        def values(self):
            for entry in super().values():
                inspected.append(entry.key)
                yield entry

    cache = ByteCache(None, ttl=10, timer=clock)
    cache._data = CountingStorage()
    for i in range(1000):
        cache[i] = i
    clock.advance(5)
    for i in range(1000, 1010):
        cache[i] = i
    inspected.clear()
    assert cache.expire() == []
    assert inspected == [0]  # the oldest entry is live, so nothing behind it is looked at
    clock.advance(5)  # the first 1000 are now 10 s idle
    inspected.clear()
    cache[2000] = 0  # a write expires first
    assert len(inspected) == 1001 and len(cache._data) == 11


def test_infinite_ttl_means_no_expiry(clock):
    cache = ByteCache(10, ttl=math.inf, timer=clock)
    cache["k"] = 1
    clock.advance(1e12)
    assert cache["k"] == 1 and cache.ttl is None


# -- callbacks ------------------------------------------------------------------------------
def test_on_evict_reports_every_cause_outside_the_lock(clock):
    events = []

    def on_evict(key, value, weight, cause):
        assert not cache._lock._is_owned()
        events.append((key, cause))

    cache = ByteCache(2, ttl=10, timer=clock, policy="lru", on_evict=on_evict)
    cache["a"] = 1
    cache["a"] = 2
    cache["b"] = 1
    cache["c"] = 1
    del cache["b"]
    clock.advance(10)
    cache.expire()
    cache["d"] = 1
    cache.clear()
    assert events == [
        ("a", EvictionCause.REPLACED),
        ("a", EvictionCause.SIZE),
        ("b", EvictionCause.EXPLICIT),
        ("c", EvictionCause.EXPIRED),
        ("d", EvictionCause.EXPLICIT),
    ]


def test_a_failing_callback_does_not_hide_other_removals_or_fail_the_caller(caplog):
    seen = []

    def on_evict(key, value, weight, cause):
        seen.append(key)
        raise RuntimeError("boom")

    cache = ByteCache(10, on_evict=on_evict)
    cache["a"], cache["b"] = 1, 2
    with caplog.at_level(logging.ERROR, logger="bytecache"):
        cache.clear()  # logged and counted, not raised: the clear itself succeeded
    assert sorted(seen) == ["a", "b"] and cache.currsize == 0 and len(cache) == 0
    assert cache.stats().callback_errors == 2
    assert [r.getMessage() for r in caplog.records] == [
        "on_evict raised for key 'a' (explicit)",
        "on_evict raised for key 'b' (explicit)",
    ]


def test_popitem_removes_the_least_recently_used():
    cache = ByteCache(10, policy="lru")
    cache["a"], cache["b"] = 1, 2
    cache["a"]
    assert cache.popitem() == ("b", 2)
    assert cache.popitem() == ("a", 1)
    with pytest.raises(KeyError):
        cache.popitem()


def test_repr_shows_budget_and_policy():
    text = repr(ByteCache("1KiB"))
    assert "maxsize=1024" in text and "tinylfu" in text


def test_weighed_items_copies_live_entries_without_expiring_counting_or_touching(clock):
    events = []
    cache = ByteCache(10, ttl=10, policy="lru", timer=clock, on_evict=lambda k, *_: events.append(k))
    cache.set("old", 1, weight=2)
    clock.advance(6)
    cache.set("a", 2, weight=3)
    cache.set("b", 3, weight=4)
    clock.advance(5)  # "old" idle for 11 s: expired but still stored
    assert cache.weighed_items() == [("a", 2, 3), ("b", 3, 4)]
    assert events == [] and cache.stats().hits == 0 and cache.stats().misses == 0
    cache.set("c", 4, weight=4)  # over by 1 after expiry: "a" is still the least recently used
    assert events == ["old", "a"]
