"""get_or_load: single flight, failures, rejections, and writes racing a load."""

import threading

import pytest

from bytecache import ByteCache


def test_hit_does_not_call_the_loader():
    cache = ByteCache(10)
    cache["k"] = "v"
    assert cache.get_or_load("k", lambda: pytest.fail("loader called on a hit")) == "v"
    assert cache.stats().hits == 1 and cache.stats().loads == 0


def test_miss_loads_once_and_caches_with_the_given_weight():
    cache = ByteCache(100)
    assert cache.get_or_load("k", lambda: "value", weight=40) == "value"
    assert cache.weight_of("k") == 40 and cache.stats().loads == 1 and cache.stats().misses == 1


def test_weight_may_be_computed_from_the_loaded_value():
    cache = ByteCache(100)
    cache.get_or_load("k", lambda: "abcdef", weight=len)
    assert cache.weight_of("k") == 6


def test_too_heavy_load_is_returned_uncached_and_counted():
    cache = ByteCache(10)
    cache["small"] = 1
    assert cache.get_or_load("big", lambda: "x", weight=11) == "x"
    assert "big" not in cache and cache.stats().rejections == 1 and cache.currsize == 1


def _gate_loader(started, release, result, calls):
    def loader():
        calls.append(threading.get_ident())
        started.set()
        assert release.wait(10)
        if isinstance(result, BaseException):
            raise result
        return result

    return loader


def _run_concurrently(cache, key, loader, n):
    results, errors = [], []

    def call():
        try:
            results.append(cache.get_or_load(key, loader, weight=1))
        except Exception as exc:  # collected for the assertions
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(n)]
    return threads, results, errors


def test_concurrent_misses_share_one_load():
    cache = ByteCache(10)
    started, release, calls = threading.Event(), threading.Event(), []
    loader = _gate_loader(started, release, "loaded", calls)
    threads, results, errors = _run_concurrently(cache, "k", loader, 8)
    threads[0].start()
    assert started.wait(10)  # the first caller is inside the loader, holding no lock
    for t in threads[1:]:
        t.start()
    assert cache.get("other") is None  # the cache stays usable during the load
    while len(cache._flights["k"].done._cond._waiters) < 7:  # all others are waiting on the flight
        threading.Event().wait(0.001)
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and results == ["loaded"] * 8 and errors == []
    stats = cache.stats()
    assert stats.loads == 1 and stats.misses == 8 + 1 and cache["k"] == "loaded"  # + the probe of "other"


def test_loader_failure_reaches_every_waiter_and_caches_nothing():
    cache = ByteCache(10)
    started, release, calls = threading.Event(), threading.Event(), []
    boom = RuntimeError("db down")
    threads, results, errors = _run_concurrently(cache, "k", _gate_loader(started, release, boom, calls), 4)
    threads[0].start()
    assert started.wait(10)
    for t in threads[1:]:
        t.start()
    while len(cache._flights["k"].done._cond._waiters) < 3:
        threading.Event().wait(0.001)
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and results == [] and errors == [boom] * 4
    assert "k" not in cache and cache.stats().load_failures == 1 and cache.stats().loads == 0
    assert cache.get_or_load("k", lambda: "retry", weight=1) == "retry"  # a later call loads again


def test_a_write_during_a_load_wins_over_the_loaded_value():
    cache = ByteCache(10)

    def loader():
        cache["k"] = "written meanwhile"
        return "loaded (stale)"

    assert cache.get_or_load("k", loader, weight=1) == "loaded (stale)"
    assert cache["k"] == "written meanwhile"


def test_a_delete_or_clear_during_a_load_keeps_the_result_out():
    cache = ByteCache(10)
    for invalidate in (lambda: cache.pop("k", None), cache.clear):
        def loader():
            invalidate()
            return "loaded before the invalidation"

        cache.get_or_load("k", loader, weight=1)
        assert "k" not in cache
