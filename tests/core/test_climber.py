"""The window hill climber on its own, then inside the policy."""

import pytest

from bytecache import ByteCache
from bytecache.climber import WindowClimber


def feed(climber, hits, misses):
    """One sample period with the given counts; returns the fraction after it."""
    climber.hits = hits
    climber.misses = misses - 1
    return climber.record_miss(period=hits + misses)


def test_first_period_only_sets_the_baseline():
    climber = WindowClimber(0.01)
    assert feed(climber, 50, 50) == 0.01 and climber.previous_hit_ratio == 0.5


def test_keeps_direction_while_not_worse_and_turns_back_when_worse():
    climber = WindowClimber(0.10, step=0.05, decay=0.5, restart_threshold=1.0)
    feed(climber, 50, 50)
    assert feed(climber, 55, 45) == pytest.approx(0.15)  # better: grow by the full step
    assert feed(climber, 60, 40) == pytest.approx(0.175)  # better again: same way, half the step
    assert feed(climber, 40, 60) == pytest.approx(0.1625)  # worse: turn back, half again


def test_a_large_change_restarts_the_full_step():
    climber = WindowClimber(0.30, step=0.05, decay=0.5, restart_threshold=0.1)
    feed(climber, 50, 50)
    feed(climber, 51, 49)  # +0.05, next step 0.025
    assert feed(climber, 20, 80) == pytest.approx(0.325)  # a big drop: turn back by 0.025 ...
    assert climber.step == pytest.approx(-0.05)  # ... and the next move is a full step down


def test_fraction_stays_within_bounds():
    climber = WindowClimber(0.02, step=0.5, decay=1.0, min_fraction=0.01, max_fraction=0.8, restart_threshold=1.0)
    feed(climber, 1, 99)
    fractions = [feed(climber, 1 + i, 99 - i) for i in range(5)]  # always better: keeps growing
    assert max(fractions) == 0.8
    fractions = [feed(climber, 1, 99) for _ in range(5)]
    assert min(fractions) == 0.01


def _scheduler_sweep(cache, n_keys, batch, sweeps):
    """Visit keys round-robin, ``batch`` per loop, each looked up twice per loop (as Airflow's
    scheduler does); return the misses per loop over the last quarter of the sweeps."""
    misses = []
    for sweep in range(sweeps):
        for start in range(0, n_keys, batch):
            keys = range(start, min(start + batch, n_keys))
            missed = 0
            for _ in range(2):
                for key in keys:
                    if cache.get(key) is None:
                        cache[key] = key
                        missed += 1
            if sweep >= sweeps * 3 // 4:
                misses.append(missed)
    return sum(misses) / len(misses)


def test_window_grows_until_the_second_lookup_of_a_visit_hits():
    n_keys, batch, capacity = 700, 20, 420
    adaptive = ByteCache(capacity)
    fixed = ByteCache(capacity)
    fixed._policy.climber = None
    adaptive_misses = _scheduler_sweep(adaptive, n_keys, batch, 12)
    fixed_misses = _scheduler_sweep(fixed, n_keys, batch, 12)
    not_resident = 1 - capacity / n_keys
    # A stable resident set alone gives two misses per non-resident visit: 2 * 20 * 0.4 = 16.
    assert fixed_misses == pytest.approx(2 * batch * not_resident, rel=0.05)
    # A window that holds a loop's batch turns the second lookup into a hit: towards 8.
    assert adaptive_misses < 1.25 * batch * not_resident
    assert adaptive._policy.window_fraction * capacity >= batch
