"""The benchmark harness itself: offline references and replay must be right for the table to mean anything."""

import math

import cachetools
import pytest

from benchmarks import matrix, offline, workloads
from benchmarks.replay import replay, weight_of
from bytecache import ByteCache


def brute_force_optimum(trace, capacity):
    """Best object hits over every eviction/bypass choice (tiny unit-weight traces only)."""
    best = 0

    def walk(i, cache, hits):
        nonlocal best
        if i == len(trace):
            best = max(best, hits)
            return
        key = trace[i][0]
        if key in cache:
            walk(i + 1, cache, hits + 1)
            return
        walk(i + 1, cache, hits)  # bypass
        if len(cache) < capacity:
            walk(i + 1, cache | {key}, hits)
        else:
            for victim in cache:
                walk(i + 1, (cache - {victim}) | {key}, hits)

    walk(0, frozenset(), 0)
    return best / len(trace)


@pytest.mark.parametrize("seed", range(5))
def test_belady_is_the_exact_optimum_for_unit_weights(seed):
    import random

    rng = random.Random(seed)
    trace = [(rng.randrange(5), 1) for _ in range(12)]
    assert offline.belady(trace, 2)[0] == pytest.approx(brute_force_optimum(trace, 2))


def test_replay_counts_hits_and_bytes_for_both_cache_kinds():
    trace = [("a", 10), ("b", 20), ("a", 10), ("c", 80), ("a", 10), ("b", 20)]
    ours = replay(trace, lambda: ByteCache(100, policy="lru"))
    theirs = replay(trace, lambda: cachetools.LRUCache(100, getsizeof=weight_of))
    assert ours == theirs
    hits = ours[0] * len(trace)
    assert hits == pytest.approx(2)  # "a" twice; "b" was evicted by "c"


def test_lru_gets_nothing_and_the_default_keeps_a_resident_set_on_the_loop_trace():
    trace = workloads.load_lirs("loop")[:20_000]
    assert len({k for k, _ in trace}) == 1011
    lru = replay(trace, lambda: ByteCache(256, policy="lru"))[0]
    default = replay(trace, lambda: ByteCache(256))[0]
    best = offline.belady(trace, 256)[0]
    assert lru == 0 and default >= 0.9 * best


def test_synthetic_workloads_are_deterministic():
    first = workloads.scheduler_sweep(20, 5)
    assert first == workloads.scheduler_sweep(20, 5)
    keys = {k for k, _ in first}
    assert len(keys) > 20  # redeploys made new versions
    assert all(w > 0 for _, w in first)


# -- the trace matrix -------------------------------------------------------------------------------


def test_scheduler_loops_read_the_next_keys_round_robin_twice_per_loop():
    trace = workloads.scheduler_loops(60, 2, per_loop=20)
    loops = [trace[i:i + 40] for i in range(0, len(trace), 40)]
    assert len(loops) == 2 * 60 // 20
    for n, loop in enumerate(loops):
        first, second = loop[:20], loop[20:]
        assert first == second  # the same 20 keys, in the same order
        assert [k for k, _ in first] == [(20 * n + j) % 60 for j in range(20)]
    weights = dict(trace)
    assert len(weights) == 60 and all(30_000 <= w <= 60_000 for w in weights.values())
    assert all(w == weights[k] for k, w in trace)  # a key keeps its weight
    with pytest.raises(ValueError, match="n_keys=50"):
        workloads.scheduler_loops(50, 1, per_loop=20)


def test_weight_generators_stay_in_their_range_and_unit_weights_are_one():
    import math
    import random

    ws = workloads.log_uniform_weights(20_000, 20_000_000)(4000, random.Random(0))
    assert min(ws) >= 20_000 and max(ws) <= 20_000_000
    # log-uniform: as many keys per decade, so the median is near the geometric mean (632 kB)
    median = sorted(ws)[len(ws) // 2]
    assert abs(math.log10(median) - math.log10(math.sqrt(20_000 * 20_000_000))) < 0.1
    assert workloads.unit_weights(3, random.Random(0)) == [1, 1, 1]
    assert {w for _, w in workloads.zipf(50, 500, 1.0, weigh=workloads.unit_weights)} == {1}


def test_version_churn_never_reads_an_old_version_again():
    trace = workloads.version_churn(20, 3000, p_new_version=0.05, weigh=workloads.log_uniform_weights(20_000, 20_000_000))
    newest: dict = {}
    for (dag, version), _ in trace:
        assert version >= newest.get(dag, 0)
        newest[dag] = version
    assert sum(newest.values()) > 20  # versions did change


def test_misses_per_loop_steady_state_and_settling_on_a_hand_checked_trace():
    # 4 keys, 2 per loop, unit weights: loops read (0 1 0 1), (2 3 2 3), (0 1 0 1), ...; 4 sweeps
    trace = workloads.scheduler_loops(4, 4, per_loop=2, weigh=workloads.unit_weights)
    assert trace[:8] == [(0, 1), (1, 1), (0, 1), (1, 1), (2, 1), (3, 1), (2, 1), (3, 1)]
    p = matrix.Pattern("tiny", trace, 4, False, loop_len=4, loops_per_sweep=2)
    lru = matrix.ours_column("lru")
    # capacity 4 holds everything: the first sweep misses each key once, then nothing
    out = lru.run(matrix.Replays(p), 4)
    assert out.per_loop == [2, 2, 0, 0, 0, 0, 0, 0]
    assert out.steady == 0 and out.settle(p) == 1.0
    # capacity 2: each loop's keys evict the other loop's, the second reads hit
    assert lru.run(matrix.Replays(p), 2).per_loop == [2] * 8
    # capacity 1: the two keys of a loop evict each other, every read misses
    one = lru.run(matrix.Replays(p), 1)
    assert one.per_loop == [4] * 8 and one.steady == 4 and one.settle(p) == 0
    assert matrix.loop_misses(bytearray([1, 0, 0, 1, 1, 1]), 3) == [2, 0]


def test_settling_is_the_first_loop_after_which_every_sweep_long_window_stays_near_the_final_value():
    # 2 loops per sweep; final (second half) = 10; the window at loops 2-3 is within 5%, not 4-5
    per_loop = [20, 20, 10, 10, 15, 15, 10, 10, 10, 10, 10, 10]
    assert matrix.steady_misses(per_loop) == 10
    assert matrix.sweeps_to_settle(per_loop, 2) == 3.0
    assert matrix.sweeps_to_settle([20, 20, 20, 10, 10, 10, 10, 10], 2) == 1.5  # from loop 3 on
    # final 10.13: 10.4 is within 5%, so steady from the first warm sweep on
    assert matrix.sweeps_to_settle([20, 20, 10.4, 10.4, 10, 10], 2) == 1.0
    assert matrix.sweeps_to_settle([20, 20, 20, 20, 10, 12], 2) == math.inf  # final 14: last window 11


def test_libcachesim_misses_per_loop_agree_with_our_lru():
    p = matrix.build_patterns(quick=True, only=["sched-200"])[0]
    r = matrix.Replays(p)
    try:
        budget = int(0.3 * p.working_set)
        ours = matrix.ours_column("lru").run(r, budget)
        theirs = matrix.libcachesim_column("LRU").run(r, budget)
    finally:
        r.close()
    assert ours.per_loop == theirs.per_loop
    assert ours.steady == 20  # LRU: every first read misses, every second read hits


def _cell(pattern, fraction, **values):
    outs = {}
    for name, v in values.items():
        if pattern.is_scheduler:
            outs[name] = matrix.Outcome(0, 0, per_loop=v)
        else:
            outs[name] = matrix.Outcome(v, v)
    return matrix.Cell(pattern, fraction, 1, outs)


_JUDGED = [matrix.Column("ours", None, "ours"), matrix.Column("lru", None, "lru"),
           matrix.Column("wtinylfu", None, "wtinylfu"), matrix.Column("offline", None, "offline")]


def test_targets_compare_with_the_best_of_lru_and_wtinylfu_and_the_offline_reference():
    unit = matrix.Pattern("u", [], 1, False)
    judge = lambda cell: matrix.judge(cell, "ours", _JUDGED)  # noqa: E731
    assert judge(_cell(unit, 0.5, ours=0.50, lru=0.52, wtinylfu=0.40, offline=0.9)) == {"A": True}
    assert judge(_cell(unit, 0.5, ours=0.50, lru=0.40, wtinylfu=0.53, offline=0.9)) == {"A": False}
    # LRU under 10%: ours must also reach 90% of the offline reference
    assert judge(_cell(unit, 0.1, ours=0.20, lru=0.05, wtinylfu=0.1, offline=0.25)) == {"A": True, "B": False}
    assert judge(_cell(unit, 0.1, ours=0.23, lru=0.05, wtinylfu=0.1, offline=0.25)) == {"A": True, "B": True}


def test_with_an_idle_ttl_ours_is_compared_only_with_rivals_that_apply_it():
    churn_ttl = matrix.Pattern("t", [], 1, True, ttl=100)
    cell = _cell(churn_ttl, 0.5, ours=0.50, lru=0.60, wtinylfu=0.1, offline=0.9)
    assert matrix.judge(cell, "ours", _JUDGED) == {"A": False}
    cell.outcomes["lru"].without_ttl = True  # an LRU that kept entries the TTL would have dropped
    assert matrix.judge(cell, "ours", _JUDGED) == {"A": True}
    assert "60.0 [no TTL]" in matrix.format_table([cell], _JUDGED)


def test_scheduler_targets_misses_per_loop_optimum_from_25_percent_and_settling():
    p = matrix.Pattern("s", [], 1, True, loop_len=40, loops_per_sweep=2)
    judge = lambda cell: matrix.judge(cell, "ours", _JUDGED)  # noqa: E731
    lru, opt = [20] * 8, [10] * 8
    # 11.5 = 1.15 x 10: met; settles after 1 sweep
    assert judge(_cell(p, 0.25, ours=[20, 20] + [11.5] * 6, lru=lru, wtinylfu=lru, offline=opt)) == \
        {"A": True, "C": True, "D": True, "E": True}
    # above LRU, above 1.15 x optimum, still moving after 2 sweeps
    got = judge(_cell(p, 0.5, ours=[30] * 6 + [21] * 2, lru=lru, wtinylfu=lru, offline=opt))
    assert got == {"A": False, "C": False, "D": False, "E": False}
    # under 25% the optimum is not a target
    assert "D" not in judge(_cell(p, 0.10, ours=[30] * 8, lru=lru, wtinylfu=lru, offline=opt))


def test_table_marks_lost_cells_and_summary_counts_them():
    unit = matrix.Pattern("u", [], 1, False, note="n")
    cells = [_cell(unit, 0.1, ours=0.50, lru=0.60, wtinylfu=0.1, offline=0.9),
             _cell(unit, 0.5, ours=0.70, lru=0.60, wtinylfu=0.1, offline=0.9)]
    table = matrix.format_table(cells, _JUDGED)
    assert "| u | 10% | **50.0** ✗A | 60.0 |" in table
    assert "| u | 50% | 70.0 | 60.0 |" in table
    summary = matrix.format_summary(cells, _JUDGED)
    assert "ours, A (" in summary and "met in 1/2 cells; lost: u@10%" in summary


def test_matrix_command_runs_one_pattern_at_one_budget(capsys, tmp_path):
    assert matrix.main(["--quick", "--only", "sched-200", "--budgets", "50", "--policy", "lru",
                        "--plot", str(tmp_path / "m.png")]) == 0
    out = capsys.readouterr().out
    assert "| sched-200 | 50% |" in out and "met in" in out
    assert (tmp_path / "m.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        matrix.main(["--only", "no-such-pattern", "--no-plot"])
    assert "no-such-pattern" in capsys.readouterr().err
