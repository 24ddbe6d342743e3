"""ByteCache as a drop-in for cachetools users, under every policy: copy, deepcopy, pickle (in
process and through a process pool), maxsize 0 and inf, setdefault, popitem, and the
cachetools decorators (`cached`, `cachedmethod`, with `info=True`)."""

import concurrent.futures
import copy
import inspect
import math
import multiprocessing
import pickle
import random
import threading
import time

import cachetools
import pytest

import bytecache.cache as cache_module
from bytecache import POLICIES, ByteCache, EvictionCause

from .conftest import FakeClock

ALL_POLICIES = sorted(POLICIES)


class Recorder:
    """A picklable on_evict that keeps what it was told."""

    def __init__(self):
        self.events = []

    def __call__(self, key, value, weight, cause):
        self.events.append((key, weight, cause))


def used_cache(policy, clock, *, budget=40, seed=7):
    """A cache whose policy has history: skewed reads, misses filled, evictions and expiries done."""
    cache = ByteCache(budget, ttl=30, timer=clock, getsizeof=len, policy=policy, on_evict=Recorder())
    rng = random.Random(seed)
    for step in range(400):
        key = min(rng.randrange(40), rng.randrange(40))  # small keys are read more often
        if cache.get(key) is None:
            cache[key] = [step] * rng.randint(1, 5)  # lists: a deep copy differs from a shallow one
        clock.advance(0.2)
    return cache


def contents(cache):
    """(key, value, weight, last use) in storage order, without touching the cache."""
    return [(key, e.value, e.weight, e.accessed) for key, e in cache._data.items()]


def describe(obj, _seen=None):
    """A policy's whole state as plain comparable values, whatever its layout: entries become
    their key, weight and policy bookkeeping; containers and objects are walked."""
    seen = set() if _seen is None else _seen
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, (bytearray, memoryview)):
        return ("bytes", bytes(obj))
    if id(obj) in seen:
        return ("cycle", type(obj).__name__)
    seen = seen | {id(obj)}
    if isinstance(obj, cache_module._Entry):
        slots = {name: describe(getattr(obj, name), seen) for name in obj.__slots__ if hasattr(obj, name)}
        slots.pop("value")
        return ("entry", sorted(slots.items(), key=lambda item: item[0]))
    if isinstance(obj, dict):
        return (type(obj).__name__, [(describe(k, seen), describe(v, seen)) for k, v in obj.items()])
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "deque":
        return (type(obj).__name__, [describe(item, seen) for item in obj])
    if isinstance(obj, (set, frozenset)):
        return (type(obj).__name__, sorted(repr(describe(item, seen)) for item in obj))
    if isinstance(obj, random.Random):
        return ("random", obj.getstate())
    if inspect.ismethod(obj):
        return ("method", obj.__func__.__qualname__, describe(obj.__self__, seen))
    if callable(obj) and not hasattr(obj, "__dict__"):
        return ("callable", getattr(obj, "__qualname__", type(obj).__name__))
    fields = dict(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if hasattr(obj, name):
                fields[name] = getattr(obj, name)
    return (type(obj).__name__, sorted((name, describe(value, seen)) for name, value in fields.items()))


def mutable_parts(obj, found=None):
    """ids of every mutable object a policy's state reaches (not the cached keys and values)."""
    found = {} if found is None else found
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, type)) or inspect.isfunction(obj):
        return found
    if id(obj) in found:
        return found
    if not isinstance(obj, (tuple, frozenset)):
        found[id(obj)] = obj
    if isinstance(obj, cache_module._Entry):
        for name in ("segment", "slots", "prior"):
            mutable_parts(getattr(obj, name, None), found)
    elif isinstance(obj, dict):
        for value in obj.values():
            mutable_parts(value, found)
    elif isinstance(obj, (list, tuple, set, frozenset)) or type(obj).__name__ == "deque":
        for item in obj:
            mutable_parts(item, found)
    elif inspect.ismethod(obj):
        mutable_parts(obj.__self__, found)
    else:
        for value in getattr(obj, "__dict__", {}).values():
            mutable_parts(value, found)
    return found


def assert_same_settings(clone, cache):
    assert type(clone) is type(cache)
    assert (clone.maxsize, clone.ttl, clone.policy) == (cache.maxsize, cache.ttl, cache.policy)


def assert_independent(clone, cache):
    """Own storage, policy state, lock and flights: nothing mutable is shared."""
    assert clone._data is not cache._data and clone._lock is not cache._lock
    assert clone._flights == {} and clone._flights is not cache._flights
    assert clone._policy is not cache._policy
    assert clone._record_access.__self__ is clone._policy  # hits are recorded in the clone's own policy
    shared = mutable_parts(clone._policy).keys() & mutable_parts(cache._policy).keys()
    assert not shared, f"the copy shares policy state: {[type(mutable_parts(cache._policy)[i]) for i in shared]}"
    entries = {id(e) for e in clone._data.values()}
    assert not entries & {id(e) for e in cache._data.values()}
    assert all(clone._data[e.key] is e for e in _policy_entries(clone))  # copied entries stay linked


def _policy_entries(cache):
    found = mutable_parts(cache._policy)
    return [obj for obj in found.values() if isinstance(obj, cache_module._Entry)]


def assert_consistent(cache):
    assert cache.currsize == sum(e.weight for e in cache._data.values())
    assert cache.maxsize is None or cache.currsize <= cache.maxsize
    assert {id(e) for e in _policy_entries(cache)} >= {id(e) for e in cache._data.values()}


def same_future(a, b, *clocks, steps=200, seed=11):
    """Drive both caches with the same requests; equivalent policy state means the same outcome."""
    rng = random.Random(seed)
    for step in range(steps):
        key = min(rng.randrange(60), rng.randrange(60))
        for cache in (a, b):
            if cache.get(key) is None:
                cache[key] = [step] * (1 + key % 5)
        for clock in clocks:
            clock.advance(0.2)
        assert list(a._data) == list(b._data), f"diverged at step {step}"


# -- 1. copy.copy and copy.deepcopy -------------------------------------------------------------
@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_shallow_copy_is_independent_and_shares_values(policy, clock):
    cache = used_cache(policy, clock)
    before = (contents(cache), cache.currsize, cache.stats(), describe(cache._policy))
    clone = copy.copy(cache)
    assert_same_settings(clone, cache)
    assert clone.timer is cache.timer and clone._getsizeof is cache._getsizeof and clone._on_evict is cache._on_evict
    assert (contents(clone), clone.currsize, clone.stats(), describe(clone._policy)) == before
    assert all(clone.peek(k) is cache.peek(k) for k in cache._data)  # shallow: the values are shared
    assert_independent(clone, cache)

    victim = next(iter(clone._data))
    del clone[victim]
    clone[1000] = [0, 0, 0]
    assert (contents(cache), cache.currsize, cache.stats(), describe(cache._policy)) == before
    assert victim not in clone and victim in cache._data
    assert_consistent(clone)
    assert_consistent(cache)


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_deep_copy_is_independent_and_copies_values(policy, clock):
    cache = used_cache(policy, clock)
    before = (contents(cache), cache.currsize, cache.stats(), describe(cache._policy))
    clone = copy.deepcopy(cache)
    assert_same_settings(clone, cache)
    assert clone.timer is cache.timer  # settings are shared even by a deep copy: same clock, same callbacks
    assert (contents(clone), clone.currsize, clone.stats(), describe(clone._policy)) == before
    assert all(clone.peek(k) == cache.peek(k) and clone.peek(k) is not cache.peek(k) for k in cache._data)
    assert_independent(clone, cache)

    key = next(reversed(clone._data))
    clone.peek(key).append("changed in the copy")
    clone.clear()
    assert (contents(cache), cache.currsize, cache.stats(), describe(cache._policy)) == before
    assert len(clone) == 0 and clone.currsize == 0 and len(cache) == len(before[0])


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy])
def test_a_copy_behaves_as_its_source_would(policy, duplicate, clock):
    """Equivalent policy state: the same requests evict the same keys in both (a copy that
    replayed its entries into a fresh policy would lose the frequency history and diverge)."""
    cache = used_cache(policy, clock, budget=25)
    clone = duplicate(cache)
    same_future(cache, clone, clock)
    assert_consistent(cache)
    assert_consistent(clone)


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_deep_copy_keeps_shared_references_shared(policy, clock):
    cache = used_cache(policy, clock)
    first, second = copy.deepcopy([cache, cache])
    assert first is second and first is not cache
    holder = {"cache": cache, "value": cache.peek(next(iter(cache._data)))}
    copied = copy.deepcopy(holder)
    assert copied["value"] is copied["cache"].peek(next(iter(cache._data)))  # one memo for the whole copy


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy])
def test_a_copy_made_during_a_load_has_no_flight_and_loads_on_its_own(duplicate):
    cache = ByteCache(10)
    copies = []

    def loader():
        copies.append(duplicate(cache))
        return "loaded by the source"

    assert cache.get_or_load("k", loader, weight=1) == "loaded by the source"
    (clone,) = copies
    assert clone._flights == {} and "k" not in clone and cache["k"] == "loaded by the source"
    assert clone.get_or_load("k", lambda: "loaded by the copy", weight=1) == "loaded by the copy"


# -- 2. pickle -----------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip_keeps_contents_settings_stats_and_policy_state(policy, protocol, clock):
    cache = used_cache(policy, clock)
    restored = pickle.loads(pickle.dumps(cache, protocol))
    assert_same_settings(restored, cache)
    assert isinstance(restored.timer, FakeClock) and restored.timer.now == clock.now
    assert restored._on_evict.events == cache._on_evict.events and restored._getsizeof is len
    assert contents(restored) == contents(cache) and restored.currsize == cache.currsize
    assert restored.stats() == cache.stats()
    assert describe(restored._policy) == describe(cache._policy)
    assert isinstance(restored._lock, type(threading.RLock())) and restored._lock.acquire(blocking=False)
    restored._lock.release()
    assert_independent(restored, cache)
    same_future(cache, restored, clock, restored.timer)  # the restored clock is a copy: advance both
    assert_consistent(restored)


class FreshClock:
    """A picklable timer that, unpickled, starts again from zero, as time.monotonic does after a
    reboot or on another machine."""

    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now

    def __reduce__(self):
        return (FreshClock, ())


def test_unpickling_keeps_idle_ages_not_clock_readings():
    clock = FreshClock(5000.0)
    cache = ByteCache(10, ttl=10, timer=clock)
    cache["k"] = "v"
    clock.now += 3  # idle for 3 of its 10 s
    restored = pickle.loads(pickle.dumps(cache))
    assert restored.timer.now == 0.0
    restored.timer.now = 6.9
    assert restored.peek("k") == "v"  # idle 9.9 s
    restored.timer.now = 7.0
    assert restored.peek("k") is None  # idle 10 s: expired, as it would have been in the source


def test_time_monotonic_is_a_picklable_timer():
    cache = ByteCache(10, ttl=60)
    cache["k"] = "v"
    restored = pickle.loads(pickle.dumps(cache))
    assert restored.timer is time.monotonic and restored["k"] == "v"


def _local_hooks():
    def local_callback(key, value, weight, cause):
        pass

    return {"timer": lambda: 0.0, "getsizeof": lambda value: 1, "on_evict": local_callback}


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("setting", ["timer", "getsizeof", "on_evict"])
def test_an_unpicklable_setting_is_named_in_the_error(policy, setting):
    hook = _local_hooks()[setting]
    cache = ByteCache(10, policy=policy, **{setting: hook})
    cache["k"] = "v"
    before = contents(cache)
    with pytest.raises(pickle.PicklingError) as info:
        pickle.dumps(cache)
    message = str(info.value)
    assert message.startswith(f"ByteCache cannot be pickled: its {setting} {hook.__qualname__} is not picklable")
    assert contents(cache) == before and cache["k"] == "v"


class Owner:
    """Holds a cache whose on_evict is one of its own methods: pickling it must not recurse."""

    def __init__(self, policy):
        self.evicted = []
        self.cache = ByteCache(2, policy=policy, on_evict=self.forget)

    def forget(self, key, value, weight, cause):
        self.evicted.append(key)


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_an_owner_whose_method_is_the_callback_round_trips(policy):
    owner = Owner(policy)
    owner.cache["a"], owner.cache["b"], owner.cache["c"] = 1, 2, 3
    restored = pickle.loads(pickle.dumps(owner))
    assert restored.cache._on_evict.__self__ is restored and restored.evicted == owner.evicted
    restored.cache.clear()
    assert len(restored.evicted) == len(owner.evicted) + 2 and len(owner.cache) == 2


def test_a_pickle_made_during_a_load_carries_no_flight():
    cache = ByteCache(10)
    pickles = []

    def loader():
        pickles.append(pickle.dumps(cache))
        return "loaded"

    cache.get_or_load("k", loader, weight=1)
    restored = pickle.loads(pickles[0])
    assert restored._flights == {} and "k" not in restored
    assert restored.get_or_load("k", lambda: "again", weight=1) == "again"


def _use_in_worker(cache):
    """Runs in a spawned process: read what was sent, write, send the cache back."""
    seen = sorted(cache._data)
    hits = sum(cache.get(key) is not None for key in seen)
    for key in range(100, 110):
        cache[key] = [key]
    return cache, seen, hits


@pytest.fixture(scope="module")
def spawned_worker():
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited but the pickle
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        yield pool


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_a_cache_round_trips_through_a_process_pool(policy, spawned_worker, clock):
    cache = used_cache(policy, clock)
    expected_keys = sorted(cache._data)
    returned, seen, hits = spawned_worker.submit(_use_in_worker, cache).result(timeout=120)
    assert seen == expected_keys and hits == len(expected_keys)
    assert returned.stats().hits == cache.stats().hits + hits
    assert all(returned.peek(key) == [key] for key in range(100, 110) if key in returned._data)
    assert returned.policy == cache.policy and returned.maxsize == cache.maxsize
    assert_consistent(returned)
    assert_independent(returned, cache)


# -- 3. maxsize 0 and inf ------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_maxsize_zero_holds_only_weightless_values_like_cachetools(policy):
    ours = ByteCache(0, getsizeof=len, policy=policy)
    theirs = cachetools.Cache(0, getsizeof=len)
    for cache in (ours, theirs):
        with pytest.raises(ValueError):
            cache["a"] = "x"
        cache["empty"] = ""
        assert dict(cache) == {"empty": ""} and cache.currsize == 0 and cache.maxsize == 0
    assert ours.get_or_load("b", lambda: "loaded", weight=1) == "loaded" and "b" not in ours
    assert ours.stats().rejections == 1 and ours.currsize == 0


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_maxsize_inf_is_no_cap_as_none_is(policy):
    infinite = ByteCache(math.inf, getsizeof=len, policy=policy)
    unbounded = ByteCache(None, getsizeof=len, policy=policy)
    for cache in (infinite, unbounded):
        for i in range(500):
            cache[i] = "x" * 1000
        assert cache.maxsize is None and cache.currsize == 500_000 and cache.stats().evictions_size == 0
    assert repr(infinite) == repr(unbounded)


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("bad, error", [(-1, ValueError), (math.nan, ValueError), (-math.inf, ValueError), (True, TypeError)])
def test_negative_nan_and_bool_maxsize_are_still_refused(policy, bad, error):
    with pytest.raises(error) as info:
        ByteCache(bad, policy=policy)
    assert "maxsize" in str(info.value) and repr(bad) in str(info.value)


# -- 4. setdefault and __missing__ ---------------------------------------------------------------
@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_setdefault_does_not_call_missing_like_cachetools(policy):
    made = []

    def missing(self, key):
        made.append(key)
        return f"made-{key}"

    ours = type("Defaulting", (ByteCache,), {"__missing__": missing})(10, policy=policy)
    theirs = type("Defaulting", (cachetools.Cache,), {"__missing__": missing})(10)
    for cache in (ours, theirs):
        assert cache.setdefault("k", "default") == "default" and cache["k"] == "default"
        assert cache.setdefault("k", "other") == "default"
        assert cache.get("nope", "dflt") == "dflt" and cache.pop("nope", "dflt") == "dflt"
        assert cache["absent"] == "made-absent"  # only __getitem__ calls it
    assert made == ["absent", "absent"]


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_getsizeof_may_be_overridden_in_a_subclass_like_cachetools(policy):
    class ByLength(ByteCache):
        def getsizeof(self, value):
            return len(value)

    cache = ByLength(5, policy=policy)
    cache["a"] = "abc"
    assert cache.weight_of("a") == 3 and cache.currsize == 3
    with pytest.raises(ValueError, match="weighs 6 bytes"):
        cache["b"] = "abcdef"


def test_setdefault_of_a_too_heavy_default_raises_and_stores_nothing():
    cache = ByteCache(3, getsizeof=len)
    with pytest.raises(ValueError, match="more than maxsize 3"):
        cache.setdefault("k", "four")
    assert "k" not in cache and cache.currsize == 0


# -- 5. popitem on empty -------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_popitem_on_empty_raises_key_error_without_context(policy, clock):
    cache = ByteCache(10, ttl=5, timer=clock, policy=policy)
    cache["k"] = "v"
    assert cache.popitem() == ("k", "v")
    cache["expired"] = "v"
    clock.advance(5)  # empty to a reader, though the entry is still stored
    for _ in range(2):
        try:
            raise LookupError("the caller's own exception being handled")
        except LookupError:
            with pytest.raises(KeyError, match="ByteCache is empty") as info:
                cache.popitem()
        assert info.value.__suppress_context__ and info.value.__cause__ is None


# -- 6. read-your-writes -------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_a_value_just_written_within_budget_is_readable_like_cachetools(policy):
    ours = ByteCache(3, getsizeof=lambda x: x, policy=policy)
    theirs = cachetools.LRUCache(3, getsizeof=lambda x: x)
    for cache in (ours, theirs):
        cache[1], cache[2] = 1, 2
        cache[3] = 3  # fits the budget alone: 1 and 2 must make room, not 3
        assert cache[3] == 3 and cache.currsize == 3


# -- cachetools decorators -----------------------------------------------------------------------
def _counting(calls):
    def square(x):
        calls.append(x)
        return [x] * x

    return square


@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("guard", ["none", "lock", "condition"])
def test_cached_decorator_memoizes_and_skips_too_heavy_values(policy, guard):
    cache = ByteCache(10, getsizeof=len, policy=policy)
    calls = []
    options = {"none": {}, "lock": {"lock": threading.RLock()}, "condition": {"condition": threading.Condition()}}
    square = cachetools.cached(cache, **options[guard])(_counting(calls))
    assert square(3) == [3, 3, 3] and square(3) == [3, 3, 3] and calls == [3]
    assert square(11) == [11] * 11 and square(11) == [11] * 11 and calls == [3, 11, 11]  # too heavy: never cached
    assert cache[cachetools.keys.hashkey(3)] == [3, 3, 3] and cache.currsize == 3
    square.cache_clear()
    assert len(cache) == 0 and square(3) == [3, 3, 3] and calls == [3, 11, 11, 3]


class ByteCacheAsCachetoolsCache(ByteCache):
    """cachetools reports maxsize and currsize in cache_info() only for its own Cache types."""


cachetools.Cache.register(ByteCacheAsCachetoolsCache)


@pytest.mark.skipif("info" not in inspect.signature(cachetools.cached).parameters, reason="cachetools < 5.3")
@pytest.mark.parametrize("policy", ALL_POLICIES)
@pytest.mark.parametrize("registered", [False, True])
def test_cached_with_info_counts_hits_and_misses(policy, registered):
    cache = (ByteCacheAsCachetoolsCache if registered else ByteCache)(10, getsizeof=len, policy=policy)
    calls = []
    square = cachetools.cached(cache, info=True)(_counting(calls))
    square(2), square(2), square(3), square(11)
    info = square.cache_info()
    assert (info.hits, info.misses) == (1, 3)
    if registered:
        assert (info.maxsize, info.currsize) == (10, 5)  # bytes, from the cache
    else:
        assert (info.maxsize, info.currsize) == (None, 2)  # cachetools' fallback for other mappings: len()
    square.cache_clear()
    assert tuple(square.cache_info()) == (0, 0, 10 if registered else None, 0)


@pytest.mark.skipif("info" not in inspect.signature(cachetools.cachedmethod).parameters, reason="cachetools < 5.3")
@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_cachedmethod_with_a_byte_cache_per_instance(policy):
    class Store:
        def __init__(self):
            self.cache = ByteCache(10, getsizeof=len, policy=policy)
            self.calls = []

        @cachetools.cachedmethod(lambda self: self.cache, info=True)
        def fetch(self, n):
            self.calls.append(n)
            return "x" * n

    one, two = Store(), Store()
    assert one.fetch(4) == "xxxx" and one.fetch(4) == "xxxx" and two.fetch(4) == "xxxx"
    assert one.calls == [4] and two.calls == [4] and one.cache.currsize == 4
    assert (one.fetch.cache_info().hits, one.fetch.cache_info().misses) == (1, 1)
    assert one.fetch(20) == "x" * 20 and len(one.cache) == 1  # too heavy for the budget: returned, not cached


def test_evictions_seen_through_a_decorator_reach_on_evict():
    recorder = Recorder()
    cache = ByteCache(4, getsizeof=len, policy="lru", on_evict=recorder)
    square = cachetools.cached(cache)(_counting([]))
    square(2), square(2), square(3)
    assert recorder.events == [(cachetools.keys.hashkey(2), 2, EvictionCause.SIZE)]


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy])
def test_copies_need_no_picklable_settings_and_share_them(duplicate):
    hooks = _local_hooks()
    cache = ByteCache(10, **hooks)
    cache["k"] = ["v"]
    clone = duplicate(cache)
    assert (clone.timer, clone._getsizeof, clone._on_evict) == (hooks["timer"], hooks["getsizeof"], hooks["on_evict"])
    assert clone["k"] == ["v"]


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_copies_and_pickles_taken_while_another_thread_writes_are_consistent(policy):
    cache = ByteCache(3000, getsizeof=len, policy=policy)
    done = threading.Event()

    def write():
        rng = random.Random(3)
        for step in range(5_000):
            key = rng.randrange(2000)
            cache[key] = "x" * rng.randint(1, 9)
            if step % 7 == 0:
                cache.pop(rng.randrange(2000), None)
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    snapshots = 0
    while not done.is_set() or snapshots < 3:
        for clone in (copy.copy(cache), copy.deepcopy(cache), pickle.loads(pickle.dumps(cache))):
            assert_consistent(clone)
            assert len(_policy_entries(clone)) == len(clone._data)
        snapshots += 1
    writer.join(30)
    assert not writer.is_alive() and snapshots >= 3
