"""The window's parts on their own (the ghosts), then how ghost hits size the window."""

import pytest

from bytecache import ByteCache
from bytecache.ghost import Ghost
from bytecache.policies import WTinyLFUPolicy


class Entry:
    def __init__(self, key, weight=1):
        self.key, self.weight = key, weight


# -- the ghost ------------------------------------------------------------------------------------
def test_ghost_remembers_weight_and_stamp_until_popped():
    ghost = Ghost(max_weight=100)
    ghost.add("a", 30, stamp=7)
    assert "a" in ghost and ghost.weight == 30
    assert ghost.pop("a") == (30, 7)
    assert ghost.pop("a") is None and ghost.weight == 0


def test_ghost_forgets_its_oldest_keys_beyond_its_weight_bound():
    ghost = Ghost(max_weight=50)
    for key in "abc":
        ghost.add(key, 20)
    assert "a" not in ghost and "b" in ghost and "c" in ghost and ghost.weight == 40


def test_ghost_forgets_its_oldest_keys_beyond_its_key_bound():
    ghost = Ghost(max_weight=10**9, max_keys=2)
    for key in "abc":
        ghost.add(key, 1)
    assert len(ghost) == 2 and "a" not in ghost


def test_re_adding_a_ghost_replaces_its_weight():
    ghost = Ghost(max_weight=100)
    ghost.add("a", 30)
    ghost.add("a", 10, stamp=3)
    assert ghost.weight == 10 and ghost.pop("a") == (10, 3)


def test_tightening_the_bound_trims_at_once():
    ghost = Ghost(max_weight=100)
    for key in "abcd":
        ghost.add(key, 20)
    ghost.bound(40, 64)
    assert ghost.weight == 40 and "c" in ghost and "b" not in ghost


# -- window sizing ---------------------------------------------------------------------------------
def fill(policy, keys, weight=1):
    entries = [Entry(k, weight) for k in keys]
    for e in entries:
        policy.add(e)
    return entries


def test_a_key_back_soon_after_the_window_let_it_go_grows_the_window():
    policy = WTinyLFUPolicy(100)  # window starts at 1
    fill(policy, range(100))
    policy.add(Entry("soon"))
    fill(policy, ["next"])  # pushes "soon" out of the window as a candidate ...
    rejected = policy.evict(2)  # ... and it is not admitted: a ghost of the window now
    assert any(v.key == "soon" for v in rejected) and "soon" in policy.window_ghost
    before = policy.window_target
    policy.add(Entry("soon"))
    assert policy.window_target > before


def test_a_key_back_from_further_than_the_cache_reaches_leaves_the_window_alone():
    policy = WTinyLFUPolicy(50)
    fill(policy, range(50))
    policy.window_ghost.add("late", 1, stamp=policy.accesses)
    fill(policy, range(50, 110))  # more accesses since than the cache holds entries
    policy.evict(60)
    before = policy.window_target
    policy.add(Entry("late"))
    assert policy.window_target == before


def test_a_key_the_main_space_let_go_shrinks_the_window():
    policy = WTinyLFUPolicy(100)
    fill(policy, range(100))
    policy.resize_window(40)
    policy.main_ghost.add("main", 10, stamp=policy.accesses)
    policy.add(Entry("main"))
    assert policy.window_target < 40


def test_the_window_never_leaves_its_bounds():
    policy = WTinyLFUPolicy(100)
    policy.resize_window(-5)
    assert policy.max_window == policy.min_window == 1
    policy.resize_window(10**6)
    assert policy.max_window == 100 and policy.max_protected == 0


# -- through the cache: the scheduler's two lookups per visit ------------------------------------------
def scheduler_misses_per_loop(cache, n_keys, batch, sweeps):
    """Visit keys round-robin, ``batch`` per loop, each looked up twice per loop (as Airflow's
    scheduler does: it examines the runs, then looks each up again); misses per loop over the
    last sweep, and per sweep."""
    per_sweep = []
    for _ in range(sweeps):
        missed = 0
        for start in range(0, n_keys, batch):
            keys = range(start, min(start + batch, n_keys))
            for _ in range(2):
                for key in keys:
                    if cache.get(key) is None:
                        cache[key] = key
                        missed += 1
        per_sweep.append(missed / (n_keys / batch))
    return per_sweep


@pytest.mark.parametrize("share", [0.1, 0.3, 0.6, 0.9])
def test_the_second_lookup_of_a_just_loaded_key_hits_at_every_budget(share):
    n_keys, batch = 700, 20
    capacity = int(share * n_keys)
    default = scheduler_misses_per_loop(ByteCache(capacity), n_keys, batch, 6)
    lru = scheduler_misses_per_loop(ByteCache(capacity, policy="lru"), n_keys, batch, 6)
    assert lru[-1] == batch  # LRU: every first lookup misses, every second one hits
    # A frozen resident set plus a window holding one loop's batch: one miss per visit to a key
    # that is not resident.
    ideal = batch * (n_keys - (capacity - batch)) / n_keys
    assert default[-1] <= lru[-1]
    assert default[-1] <= 1.1 * ideal + 0.5
    # settled within two sweeps of the working set
    assert abs(default[1] - default[-1]) <= 0.05 * default[-1] + 0.5


def test_hits_leave_the_ghosts_alone():
    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"a hit used the ghost ({name})")

    cache = ByteCache(50)
    for key in range(200):  # evictions: both ghosts hold keys
        cache[key] = key
    policy = cache._policy
    policy.window_ghost = policy.main_ghost = Untouchable()
    resident = list(cache._data)
    for _ in range(3):
        for key in resident:
            assert cache[key] == key
