"""get_or_load: single flight, failures, rejections, and writes racing a load."""

import logging
import threading

import pytest

import bytecache.cache as cache_module
from bytecache import ByteCache, EvictionCause, LoadFailedError


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


class WaiterCount:
    """Instrumentation: the flights the cache creates report each caller that starts waiting on
    them, so a test can wait until every waiter has joined a load in progress -- no sleeps."""

    def __init__(self, monkeypatch):
        self.changed = threading.Condition()
        self.waiting = 0
        counter = self

        class CountingEvent(threading.Event):
            def wait(self, timeout=None):
                with counter.changed:
                    counter.waiting += 1
                    counter.changed.notify_all()
                return super().wait(timeout)

        class CountedFlight(cache_module._Flight):
            __slots__ = ()

            def __init__(self):
                super().__init__()
                self.done = CountingEvent()

        monkeypatch.setattr(cache_module, "_Flight", CountedFlight)

    def wait_for(self, n):
        with self.changed:
            return self.changed.wait_for(lambda: self.waiting >= n, timeout=10)


def _blocking_loader(cache, waiters, n_waiters, result, calls, seen):
    """A loader that returns (or raises) only once ``n_waiters`` callers wait on its flight: the
    load provably overlaps all of them. If loads were not shared it times out and ``seen`` shows it."""

    def loader():
        calls.append(threading.get_ident())
        seen.append(cache.get("other"))  # the cache stays usable (no lock held) during the load
        seen.append(waiters.wait_for(n_waiters))
        if isinstance(result, BaseException):
            raise result
        return result

    return loader


def _run_concurrently(cache, key, loader, n):
    results, errors = [], []

    def call():
        try:
            results.append(cache.get_or_load(key, loader, weight=1))
        except BaseException as exc:  # collected for the assertions (KeyboardInterrupt included)
            errors.append(exc)

    threads = [threading.Thread(target=call, daemon=True) for _ in range(n)]  # a hung one must not hang pytest
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return results, errors


def test_concurrent_misses_share_one_load(monkeypatch):
    cache = ByteCache(10)
    waiters, calls, seen = WaiterCount(monkeypatch), [], []
    loader = _blocking_loader(cache, waiters, 7, "loaded", calls, seen)
    results, errors = _run_concurrently(cache, "k", loader, 8)
    assert seen == [None, True]  # one load, during which all 7 other callers were waiting on it
    assert len(calls) == 1 and results == ["loaded"] * 8 and errors == []
    stats = cache.stats()
    assert stats.loads == 1 and stats.misses == 8 + 1 and cache["k"] == "loaded"  # + the probe of "other"


def test_loader_failure_reaches_every_waiter_as_its_own_exception(monkeypatch):
    cache = ByteCache(10)
    waiters, calls, seen = WaiterCount(monkeypatch), [], []
    boom = RuntimeError("db down")
    results, errors = _run_concurrently(cache, "k", _blocking_loader(cache, waiters, 3, boom, calls, seen), 4)
    assert seen == [None, True] and len(calls) == 1 and results == [] and len(errors) == 4
    copies = [error for error in errors if error is not boom]
    assert len(copies) == 3 and len({id(error) for error in copies}) == 3  # one object per waiter
    for error in copies:
        assert type(error) is RuntimeError and error.args == ("db down",) and error.__cause__ is boom
    assert "k" not in cache and cache.stats().load_failures == 1 and cache.stats().loads == 0
    assert cache.get_or_load("k", lambda: "retry", weight=1) == "retry"  # a later call loads again


class NeedsKeywords(Exception):
    def __init__(self, *, code):
        super().__init__(f"code {code}")


@pytest.mark.parametrize("failure", [NeedsKeywords(code=7), KeyboardInterrupt()])
def test_a_waiter_gets_a_load_failed_error_when_the_failure_cannot_be_copied(monkeypatch, failure):
    cache = ByteCache(10)
    waiters, calls, seen = WaiterCount(monkeypatch), [], []
    results, errors = _run_concurrently(cache, "k", _blocking_loader(cache, waiters, 1, failure, calls, seen), 2)
    assert seen == [None, True] and results == [] and len(errors) == 2
    (waiter_error,) = [error for error in errors if error is not failure]
    assert type(waiter_error) is LoadFailedError and waiter_error.__cause__ is failure
    assert repr(failure) in str(waiter_error)


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


def test_when_storing_the_loaded_value_fails_waiters_are_released_with_the_value(monkeypatch):
    cache = ByteCache(10)
    waiters, calls, seen = WaiterCount(monkeypatch), [], []

    def broken_add(entry):
        raise RuntimeError("policy bug")

    cache._policy.add = broken_add
    results, errors = _run_concurrently(cache, "k", _blocking_loader(cache, waiters, 1, "loaded", calls, seen), 2)
    assert seen == [None, True] and len(calls) == 1  # both threads returned: nobody blocks forever
    assert results == ["loaded"] and [str(error) for error in errors] == ["policy bug"]  # only the leader's store failed
    assert cache._flights == {}  # the failed store left no flight behind: the next miss loads again


def _failing_callback(seen):
    def on_evict(key, value, weight, cause):
        seen.append((key, cause))
        raise RuntimeError(f"callback failed on {key}")

    return on_evict


def test_an_on_evict_error_does_not_fail_a_load_it_is_logged_and_counted(clock, caplog):
    seen = []
    cache = ByteCache(2, ttl=10, timer=clock, policy="lru", on_evict=_failing_callback(seen))
    cache["stale"] = 1
    clock.advance(10)
    with caplog.at_level(logging.ERROR, logger="bytecache"):
        assert cache.get_or_load("k", lambda: "loaded", weight=1) == "loaded"  # expiring "stale" raised in on_evict
    assert cache["k"] == "loaded" and seen == [("stale", EvictionCause.EXPIRED)]
    assert cache.stats().callback_errors == 1 and cache.stats().loads == 1
    (record,) = caplog.records
    assert record.name == "bytecache" and "'stale'" in record.getMessage()
    assert "callback failed on stale" in str(record.exc_info[1])


def test_an_on_evict_error_does_not_fail_a_write(caplog):
    seen = []
    cache = ByteCache(2, policy="lru", on_evict=_failing_callback(seen))
    cache["a"], cache["b"] = 1, 2
    with caplog.at_level(logging.ERROR, logger="bytecache"):
        cache["c"] = 3  # evicts "a", whose callback raises
        cache["c"] = 4  # replaces 3, whose callback raises
    assert dict(cache) == {"b": 2, "c": 4} and cache.currsize == 2
    assert seen == [("a", EvictionCause.SIZE), ("c", EvictionCause.REPLACED)]
    assert cache.stats().callback_errors == 2 and len(caplog.records) == 2


def test_an_over_budget_load_still_expires_a_stale_value_under_its_key(clock):
    expired = []
    cache = ByteCache(10, ttl=5, timer=clock, on_evict=lambda k, v, w, cause: expired.append((k, v, cause)))
    cache.set("k", "old", weight=4)
    clock.advance(5)  # "k" is stale: a miss, but its 4 bytes are still held
    assert cache.get_or_load("k", lambda: "new and too big", weight=11) == "new and too big"
    assert cache.stats().rejections == 1 and "k" not in cache
    assert cache.currsize == 0 and len(cache._data) == 0  # the stale value is gone, not just hidden
    assert expired == [("k", "old", EvictionCause.EXPIRED)] and cache.stats().evictions_expired == 1
