"""The shadow LRU on its own, then how its lead turns the default policy into LRU where LRU wins."""

import random

import pytest

from bytecache import ByteCache
from bytecache.shadow import LEAD_BOUND, LEAD_MARGIN, ShadowLRU


# -- the shadow -----------------------------------------------------------------------------------
def test_a_miss_reports_whether_an_lru_of_the_budget_held_the_key():
    shadow = ShadowLRU(100)
    assert shadow.record_miss("a", 40) is False
    assert shadow.record_miss("b", 40) is False
    assert shadow.record_miss("a", 40) is True  # held: an LRU would have hit
    assert shadow.lead == 40


def test_it_holds_the_most_recent_keys_within_the_budget():
    shadow = ShadowLRU(100)
    for key in "abc":
        shadow.record_miss(key, 40)
    assert "a" not in shadow and "b" in shadow and "c" in shadow and shadow.weight == 80
    assert shadow.record_miss("a", 40) is False  # an LRU of 100 had let it go


def test_a_key_heavier_than_the_budget_is_held_alone_as_an_lru_write_would_be():
    shadow = ShadowLRU(100)
    shadow.record_miss("a", 10)
    shadow.record_miss("huge", 150)
    assert list(shadow.keys) == ["huge"] and shadow.weight == 150


def test_a_hit_on_a_key_the_lru_had_dropped_counts_for_the_policy():
    shadow = ShadowLRU(100)
    for key in "abc":
        shadow.record_miss(key, 40)
    shadow.record_hit("a", 40)  # the policy kept "a"; the LRU had not
    assert shadow.lead == -40 and list(shadow.keys) == ["c", "a"]
    shadow.record_hit("c", 40)  # both hold it: only recency changes
    assert shadow.lead == -40 and list(shadow.keys) == ["a", "c"]


def test_the_lead_is_bounded_both_ways_and_ahead_needs_a_margin():
    shadow = ShadowLRU(1000)
    bound = 1000 * LEAD_BOUND
    for i in range(100):
        shadow.record_hit(f"only-ours-{i}", 100)
    assert shadow.lead == -bound and not shadow.ahead
    for _ in range(200):
        shadow.record_miss("x", 10)  # held after its first use: every later miss is LRU's hit
    assert shadow.lead == bound and shadow.ahead
    margin = int(1000 * LEAD_MARGIN)
    shadow = ShadowLRU(1000)
    shadow.record_miss("y", margin)
    shadow.record_miss("y", margin)
    assert shadow.lead == margin and not shadow.ahead  # at the margin, not past it
    shadow.record_miss("y", 1)
    assert shadow.ahead


def test_depth_is_the_weight_used_since_the_key():
    shadow = ShadowLRU(1000)
    for key, weight in (("a", 10), ("b", 20), ("c", 30)):
        shadow.record_miss(key, weight)
    assert shadow.depth("a") == 50 and shadow.depth("c") == 0 and shadow.depth("zz") is None


def test_reweigh_changes_the_weight_not_the_recency_and_discard_forgets():
    shadow = ShadowLRU(100)
    for key in "ab":
        shadow.record_miss(key, 30)
    shadow.reweigh("a", 60)
    assert shadow.weight == 90 and list(shadow.keys) == ["a", "b"]
    shadow.reweigh("a", 80)  # over the budget: the least recent goes, as in an LRU
    assert "a" not in shadow and shadow.weight == 30
    shadow.discard("b")
    assert len(shadow) == 0 and shadow.weight == 0
    shadow.clear()
    assert shadow.lead == 0


# -- through the policy ---------------------------------------------------------------------------
def scheduler_loops(n_keys, sweeps, per_loop=20, seed=5):
    """Each loop reads the next ``per_loop`` keys round-robin twice; weights 30-60 kB."""
    rng = random.Random(seed)
    weights = [rng.randint(30_000, 60_000) for _ in range(n_keys)]
    for start in range(0, sweeps * n_keys, per_loop):
        batch = [(k % n_keys, weights[k % n_keys]) for k in range(start, start + per_loop)]
        yield batch + batch


def misses_per_loop(cache, loops):
    out = []
    for loop in loops:
        missed = 0
        for key, weight in loop:
            if cache.get(key) is None:
                cache.set(key, key, weight=weight)
                missed += 1
        out.append(missed)
    return out


def test_where_lru_keeps_winning_the_policy_becomes_lru():
    # 200 keys, a budget of about one loop's 20 keys: frequency has nothing to offer (every key is
    # read twice per sweep), recency catches the second lookups whenever a loop fits.
    budget = int(0.10 * 200 * 45_000)
    ours = ByteCache(budget)
    lru = ByteCache(budget, policy="lru")
    mine = misses_per_loop(ours, scheduler_loops(200, 20))
    theirs = misses_per_loop(lru, scheduler_loops(200, 20))
    half = len(mine) // 2
    assert sum(mine[half:]) <= sum(theirs[half:])
    policy = ours._policy
    assert policy.shadow.ahead and policy.max_window == budget


def test_where_frequency_wins_the_policy_stays_tinylfu():
    budget = int(0.50 * 700 * 45_000)
    ours = ByteCache(budget)
    mine = misses_per_loop(ours, scheduler_loops(700, 6))
    assert not ours._policy.shadow.ahead and ours._policy.max_window < budget / 4
    assert sum(mine[-35:]) / 35 < 14  # LRU: 20 per loop


def test_the_hit_path_keeps_the_shadow_in_recency_order():
    cache = ByteCache(3)
    for key in "abc":
        cache[key] = key
    shadow = cache._policy.shadow
    assert cache["a"] == "a"
    assert list(shadow.keys) == ["b", "c", "a"] and shadow.lead == 0


def test_a_hit_lru_would_have_missed_lowers_the_lead():
    cache = ByteCache(4)
    for key in "abcd":
        cache[key] = key
    shadow = cache._policy.shadow
    shadow.keys.pop("a")  # as if an LRU of this budget had let "a" go
    shadow.weight -= 1
    assert cache["a"] == "a"
    assert shadow.lead == -1 and "a" in shadow


@pytest.mark.parametrize("drop", ["del", "expire"])
def test_a_key_deleted_or_expired_leaves_the_shadow_too(drop):
    now = [0.0]
    cache = ByteCache(10, ttl=5, timer=lambda: now[0])
    cache["a"] = 1
    if drop == "del":
        del cache["a"]
    else:
        now[0] = 10
        cache.expire()
    assert "a" not in cache._policy.shadow
    cache["a"] = 1  # a new key for an LRU too: no evidence that LRU would have hit it
    assert cache._policy.shadow.lead == 0


def test_credit_scores_a_miss_for_the_policy_within_the_bound():
    shadow = ShadowLRU(100)
    shadow.credit_policy(30)
    assert shadow.lead == -30
    shadow.credit_policy(1000)
    assert shadow.lead == -100 * LEAD_BOUND


def test_a_policy_that_turned_to_lru_turns_back_when_frequent_keys_keep_missing():
    rng = random.Random(7)
    keys = list(range(2000))
    popularity = [1 / (rank + 1) for rank in keys]  # Zipf 1
    trace = rng.choices(keys, weights=popularity, k=40_000)
    cache = ByteCache(100)
    policy = cache._policy
    # As if LRU had led while the cache warmed up: the policy is that LRU now.
    policy.shadow.lead = policy.shadow.max_weight
    policy.resize_window(policy.maxsize)
    lru = ByteCache(100, policy="lru")
    ours = theirs = 0
    for i, key in enumerate(trace):
        for cache_, hit in ((cache, "ours"), (lru, "theirs")):
            if cache_.get(key) is None:
                cache_[key] = key
            elif i >= len(trace) // 2:
                if hit == "ours":
                    ours += 1
                else:
                    theirs += 1
    assert not policy.shadow.ahead and policy.max_window < policy.maxsize / 2
    assert ours > theirs * 1.1  # W-TinyLFU again: clearly above LRU on a skewed trace


def short_trace_lru_wins(loops):
    """A 100-entry budget, unit weights: 20 keys read twice and never again, 80 live keys read twice,
    then loops that each read 20 of the live keys once, between two reads of two new keys. LRU
    keeps the new keys for their second read (the dead keys are its least recent); frequency keeps
    the dead keys (read twice) over the new ones (never seen), so LRU wins two hits per loop."""
    trace = []
    for key in range(1000, 1020):
        trace += [key, key]
    for key in range(80):
        trace += [key, key]
    for i in range(loops):
        new = [2000 + 10 * i, 2001 + 10 * i]
        trace += new + list(range(20 * (i % 4), 20 * (i % 4) + 20)) + new
    return trace


def hits(cache, trace):
    count = 0
    for key in trace:
        if cache.get(key) is None:
            cache.set(key, key, weight=1)
        else:
            count += 1
    return count


def test_a_short_trace_where_lru_wins_turns_to_lru_after_a_few_of_its_hits():
    # Three loops, 272 lookups: LRU's lead grows by two entries a loop, and the policy must follow
    # it within two points of its hit ratio (5.4 lookups). With a 5% margin (six entries here) it
    # turned only after the third loop and missed six more lookups than LRU.
    trace = short_trace_lru_wins(3)
    ours, lru = ByteCache(100), ByteCache(100, policy="lru")
    mine, theirs = hits(ours, trace), hits(lru, trace)
    assert ours._policy.shadow.ahead
    assert theirs - mine <= 4
