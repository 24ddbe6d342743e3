import random

import pytest

from bytecache.workingset import BYTES_PER_KEY, WorkingSet


def sweep(ws, clock, keys, weights, *, period, lookups=2):
    """One round-robin sweep over ``keys`` taking ``period`` seconds; each visit reads its key ``lookups`` times."""
    step = period / len(keys)
    for key in keys:
        for i in range(lookups):
            if i == 0 and key in weights and key not in ws._keys:
                ws.record(key, weights[key], clock.now)
            else:
                ws.touch(key, clock.now)
            clock.advance(step / (2 * lookups))
        clock.advance(step / 2)


def test_window_is_the_sweep_period_not_the_second_lookup_gap(clock):
    ws = WorkingSet()
    keys = list(range(100))
    weights = {k: 1000 + k for k in keys}
    for _ in range(3):
        sweep(ws, clock, keys, weights, period=10.0)
    est = ws.estimate(clock.now)
    assert est.window == pytest.approx(10.0 * ws.slack, rel=0.01)
    assert est.entries == 100 and est.bytes == sum(weights.values())


def test_superseded_keys_leave_the_working_set_after_one_window(clock):
    ws = WorkingSet()
    keys = [f"dag{i}-v1" for i in range(50)]
    weights = {k: 10_000 for k in keys}
    for _ in range(3):
        sweep(ws, clock, keys, weights, period=5.0)
    # half the DAGs get a new version, twice as heavy; the old versions are never read again
    new = {k: k.replace("-v1", "-v2") if i % 2 else k for i, k in enumerate(keys)}
    weights.update({v: 20_000 for k, v in new.items() if v != k})
    keys = list(new.values())
    sweep(ws, clock, keys, weights, period=5.0)
    assert ws.estimate(clock.now).entries > 50  # the old versions read late in the last sweep still count
    sweep(ws, clock, keys, weights, period=5.0)
    assert ws.estimate(clock.now).bytes == 25 * 10_000 + 25 * 20_000
    assert ws.estimate(clock.now).entries == 50


def test_a_key_never_read_twice_has_no_window_yet_and_counts_what_was_read(clock):
    ws = WorkingSet()
    ws.record("a", 7, clock.now)
    clock.advance(1)
    ws.record("b", 5, clock.now)
    est = ws.estimate(clock.now)
    assert est == (12, 2, None)


def test_weight_of_is_the_last_recorded_weight_and_none_when_forgotten(clock):
    ws = WorkingSet()
    assert ws.weight_of("a") is None
    ws.record("a", 7, clock.now)
    ws.touch("a", clock.now + 1)
    assert ws.weight_of("a") == 7
    ws.record("a", 9, clock.now + 2)  # reloaded and reweighed
    assert ws.weight_of("a") == 9
    ws.forget("a")
    assert ws.weight_of("a") is None


def test_matches_a_brute_force_count_over_the_trace(clock):
    rng = random.Random(7)
    ws = WorkingSet(quantile=0.9)
    trace = []  # (time, key, weight or None)
    live = {f"d{i}": 0 for i in range(80)}
    for loop in range(400):
        batch = rng.sample(sorted(live), 10)
        for key in batch + batch:  # examined, then looked up again
            version = f"{key}@{live[key]}"
            weight = 1_000 * (1 + hash(version) % 50)
            trace.append((clock.now, version, weight))
            if version in ws._keys:
                ws.touch(version, clock.now)
            else:
                ws.record(version, weight, clock.now)
            clock.advance(0.01)
        if rng.random() < 0.1:
            live[rng.choice(sorted(live))] += 1  # a redeploy: a new version
        clock.advance(rng.uniform(0.5, 1.5))
    est = ws.estimate(clock.now)
    start = clock.now - est.window
    truth = {}
    for t, version, weight in trace:
        if t >= start:
            truth[version] = weight
    assert est.entries == len(truth)
    assert est.bytes == sum(truth.values())


def test_long_idle_keys_are_pruned_and_max_keys_caps_memory(clock):
    ws = WorkingSet(max_keys=30, keep=2.0, slack=1.0, min_keep=0)
    keys = list(range(20))
    for _ in range(3):
        sweep(ws, clock, keys, {k: 1 for k in keys}, period=2.0)
    others = [f"x{i}" for i in range(20)]
    for _ in range(3):
        sweep(ws, clock, others, {k: 1 for k in others}, period=2.0)
    ws.estimate(clock.now)
    assert len(ws) == 20 and all(k in ws._keys for k in others)  # the first sweep's keys are 3 windows idle
    ws2 = WorkingSet(max_keys=10)
    for _ in range(2):
        sweep(ws2, clock, keys, {k: 1 for k in keys}, period=100.0)
    ws2.estimate(clock.now)
    assert len(ws2) == 10 and set(ws2._keys) == set(keys[-10:])


@pytest.mark.parametrize("kwargs, message", [
    ({"max_keys": 0}, "max_keys must be a whole number >= 1, got 0"),
    ({"max_keys": True}, "max_keys must be a whole number >= 1, got True"),
    ({"quantile": 1.0}, "quantile must be in [0.5, 1), got 1.0"),
    ({"keep": 0.5}, "keep must be >= 1 (windows), got 0.5"),
    ({"slack": 0.9}, "slack must be >= 1, got 0.9"),
    ({"min_keep": -1}, "min_keep must be >= 0 seconds, got -1"),
])
def test_bad_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError) as err:
        WorkingSet(**kwargs)
    assert str(err.value) == message


def test_bytes_per_key_is_stated():
    assert 64 <= BYTES_PER_KEY <= 256


def test_early_short_gaps_do_not_prune_keys_before_they_come_back(clock):
    # The first sweep's only gaps are second lookups one second apart; pruning by that window
    # alone would drop every key before its next visit and the window would never learn the sweep.
    ws = WorkingSet(min_keep=600)
    keys = list(range(30))
    for _ in range(4):
        sweep(ws, clock, keys, {k: 10 for k in keys}, period=60.0)
        ws.estimate(clock.now)  # maintenance runs all along
    est = ws.estimate(clock.now)
    assert est.window == pytest.approx(60.0 * ws.slack, rel=0.02)
    assert est.entries == 30
