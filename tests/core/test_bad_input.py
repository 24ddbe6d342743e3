"""Each bad input raises an error naming the parameter and the value, and changes nothing."""

import math

import pytest

from bytecache import ByteCache

from .conftest import snapshot


@pytest.mark.parametrize("bad", [-1, -math.inf, math.nan, True, False, "12 parsecs", "", "-5MiB", "1.5 B", "inf"])
def test_bad_maxsize(bad):  # 0 and math.inf are accepted, as in cachetools (test_cachetools_compat)
    with pytest.raises((ValueError, TypeError)) as info:
        ByteCache(bad)
    assert "maxsize" in str(info.value) and repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", [0, -3, math.nan, -math.inf, True, "10"])
def test_bad_ttl(bad):
    with pytest.raises((ValueError, TypeError)) as info:
        ByteCache(10, ttl=bad)
    assert "ttl" in str(info.value) and repr(bad) in str(info.value)


def test_bad_policy_names_the_choices():
    with pytest.raises(ValueError, match=r"policy must be one of .*'lru'.*got 'arc'"):
        ByteCache(10, policy="arc")


@pytest.mark.parametrize("bad", [1, "len"])
def test_non_callable_hooks(bad):
    with pytest.raises(TypeError, match="getsizeof"):
        ByteCache(10, getsizeof=bad)
    with pytest.raises(TypeError, match="on_evict"):
        ByteCache(10, on_evict=bad)
    with pytest.raises(TypeError, match="timer"):
        ByteCache(10, timer=bad)


def _filled(getsizeof):
    cache = ByteCache(100, getsizeof=getsizeof, ttl=50)
    cache["a"] = "good"
    cache["b"] = "fine"
    cache.get("a"), cache.get("missing")
    return cache


def _raising(value):
    if value == "boom":
        raise RuntimeError("cannot weigh")
    return 1


@pytest.mark.parametrize(
    "returned, error",
    [(-1, ValueError), (math.nan, TypeError), (2.0, TypeError), ("3", TypeError), (None, TypeError), (True, TypeError)],
)
def test_getsizeof_returning_garbage(returned, error):
    cache = _filled(lambda v: returned if v == "bad" else 1)
    before = snapshot(cache)
    with pytest.raises(error) as info:
        cache["a"] = "bad"
    assert "getsizeof" in str(info.value) and repr(returned) in str(info.value)
    assert snapshot(cache) == before
    with pytest.raises(error):
        cache.get_or_load("new", lambda: "bad")
    after = snapshot(cache)
    assert after[:2] == before[:2] and after[2].load_failures == 1  # the failed load is counted, nothing stored


def test_getsizeof_raising():
    cache = _filled(_raising)
    before = snapshot(cache)
    with pytest.raises(ValueError, match=r"getsizeof raised RuntimeError\('cannot weigh'\) for value 'boom'"):
        cache["c"] = "boom"
    assert snapshot(cache) == before


@pytest.mark.parametrize("weight, error", [(-5, ValueError), (1.5, TypeError), ("5", TypeError), (False, TypeError)])
def test_bad_explicit_weight(weight, error):
    cache = _filled(len)
    before = snapshot(cache)
    with pytest.raises(error) as info:
        cache.set("a", "x", weight=weight)
    assert "weight" in str(info.value) and repr(weight) in str(info.value)
    assert snapshot(cache) == before


@pytest.mark.parametrize("key", [["list"], {"a": 1}, {1, 2}])
def test_unhashable_key(key):
    cache = _filled(len)
    before = snapshot(cache)
    for operation in (
        lambda: cache.__setitem__(key, "v"),
        lambda: cache.set(key, "v", weight=1),
        lambda: cache[key],
        lambda: cache.get(key),
        lambda: cache.get_or_load(key, lambda: "v"),
        lambda: cache.__delitem__(key),
    ):
        with pytest.raises(TypeError) as info:
            operation()
        assert "key must be hashable" in str(info.value) and type(key).__name__ in str(info.value)
    assert snapshot(cache) == before
