"""The soak's statistics and verdict, on synthetic series with known answers."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from profiling.soak import analysis
from profiling.soak.analysis import (
    BOUND_FACTOR,
    CRITERION,
    FLAT,
    GROWING,
    INCONCLUSIVE,
    LONG_WINDOW_S,
    accounting_error,
    fit_slope,
    judge,
    quantile,
    quantile_difference,
    run_stats,
    slope_estimate,
)
from profiling.soak.model import RunRecord, Sample
from profiling.units import MiB

BUDGET = 32 * MiB


def record(name: str, level_mib: float, seconds: int = 400, slope_mib_h: float = 0.0, noise_mib: float = 2.0,
           warmup: float = 100.0, seed: int = 1) -> RunRecord:
    """A run whose RSS sits at ``level_mib`` (+ a slope) with seeded sawtooth-and-jitter noise."""
    rng = random.Random(seed)
    samples = []
    for t in range(seconds):
        saw = noise_mib * ((t % 30) / 30 - 0.5)  # a collection cycle: climbs, drops
        rss = (level_mib + slope_mib_h * t / 3600 + saw + rng.uniform(-0.5, 0.5)) * MiB
        samples.append(Sample(float(t), int(rss), int(0.8 * rss), int(0.6 * rss), 3.0))
    return RunRecord(name, duration=float(seconds), warmup=warmup, samples=samples)


def test_quantile_interpolates_and_handles_empty():
    assert quantile([1, 2, 3, 4, 5], 0.5) == 3
    assert quantile([0, 10], 0.9) == pytest.approx(9)
    assert math.isnan(quantile([], 0.5))


def test_fit_slope_exact_line_and_degenerate_input():
    ts = [0, 1, 2, 3, 4]
    assert fit_slope(ts, [3 + 2 * t for t in ts]) == pytest.approx(2.0)
    assert fit_slope([1.0], [5.0]) == 0.0
    assert fit_slope([2, 2, 2], [1, 2, 3]) == 0.0


def test_slope_estimate_on_a_line_and_on_flat_noise():
    line = [(float(t), 100 + 36 * t / 3600) for t in range(600)]  # 36 units per hour
    est = slope_estimate(line, 100)
    assert est.value == pytest.approx(36) and est.hi - est.lo == pytest.approx(0, abs=1e-6)
    flat = [(s.t, s.rss / MiB) for s in record("x", 200).samples]
    est = slope_estimate(flat, 100)
    assert est.lo < 0 < est.hi  # no trend: the interval holds 0
    assert slope_estimate(line, 585) is None  # a window under MIN_WINDOW_S


def test_quantile_difference_is_the_shift_and_is_deterministic():
    a = [s.rss for s in record("a", 250).samples[100:]]
    b = [s.rss for s in record("b", 200, seed=2).samples[100:]]
    d = quantile_difference(a, b)
    assert d.value == pytest.approx(50 * MiB, rel=0.05)
    assert d.lo <= d.value <= d.hi and d.hi - d.lo < 5 * MiB
    assert quantile_difference(a, b) == d
    assert quantile_difference([], b) is None


def test_judge_flat_within_the_bound():
    ref = run_stats(record("reference", 200))
    ours = run_stats(record("bytecache", 200 + 0.8 * BUDGET / MiB, seed=3))
    v = judge(ours, ref, BUDGET)
    assert v.outcome == FLAT, v.line()
    assert v.excess.hi <= BOUND_FACTOR * BUDGET and v.line().startswith("bytecache: flat (RSS above the reference")


def test_judge_growing_over_the_bound():
    ref = run_stats(record("reference", 200))
    unbounded = run_stats(record("unbounded", 200 + 2 * BUDGET / MiB, slope_mib_h=3000, seed=4))
    v = judge(unbounded, ref, BUDGET)
    assert v.outcome == GROWING and "exceeds the bound" in v.reason


def test_judge_growing_fast_within_a_short_window():
    # a steep climb whose interval straddles the bound: its own trend takes it past within one more window
    ref = run_stats(record("reference", 200))
    climbing = run_stats(record("unbounded", 205, seconds=200, warmup=100, slope_mib_h=600, seed=9))
    v = judge(climbing, ref, BUDGET)
    assert v.outcome == GROWING and "another window" in v.reason, v.line()


def test_judge_straddling_the_bound_is_inconclusive():
    ref = run_stats(record("reference", 200, noise_mib=8))
    edge = run_stats(record("bytecache", 200 + BOUND_FACTOR * BUDGET / MiB, noise_mib=8, seed=5))
    v = judge(edge, ref, BUDGET)
    assert v.outcome == INCONCLUSIVE and "straddles the bound" in v.reason


def test_judge_rising_within_the_bound_depends_on_the_window():
    ref = run_stats(record("reference", 200))
    short = run_stats(record("bytecache", 200, slope_mib_h=200, seed=6))  # +22 MiB over 400 s
    v = judge(short, ref, BUDGET)
    assert v.outcome == INCONCLUSIVE and "still rising" in v.reason
    long_ = int(LONG_WINDOW_S) + 600
    ref_long = run_stats(record("reference", 200, seconds=long_, warmup=300))
    slow = run_stats(record("bytecache", 200, seconds=long_, warmup=300, slope_mib_h=10, noise_mib=0.5, seed=7))
    v = judge(slow, ref_long, BUDGET)  # 10 MiB/h against a 0.32 MiB/h limit, resolved over 20 min
    assert v.outcome == GROWING and "rising" in v.reason


def test_without_a_reference_the_trend_alone_is_judged_over_a_long_window():
    long_ = int(LONG_WINDOW_S) + 600
    short = judge(run_stats(record("bytecache", 220)), None, BUDGET)  # a 300 s window
    assert short.outcome == INCONCLUSIVE and "no reference" in short.reason and "too short" in short.reason, short.line()
    flat = judge(run_stats(record("bytecache", 220, seconds=long_, warmup=300, noise_mib=0.5, seed=12)), None, BUDGET)
    assert flat.outcome == FLAT and "trend alone" in flat.reason and flat.excess is None, flat.line()
    assert flat.slope.lo <= 0.01 * BUDGET
    # 10 MiB/h over 20 min, against 1% of the budget per hour: nothing subtracted, so it is growth
    rising = judge(run_stats(record("bytecache", 220, seconds=long_, warmup=300, slope_mib_h=10, noise_mib=0.5, seed=7)),
                   None, BUDGET)
    assert rising.outcome == GROWING and rising.slope.lo > 0.01 * BUDGET and "no reference" in rising.reason, rising.line()


def test_judge_needs_enough_samples():
    too_short = run_stats(record("bytecache", 220, seconds=115, warmup=100))
    v = judge(too_short, run_stats(record("reference", 200)), BUDGET)
    assert v.outcome == INCONCLUSIVE and v.reason.startswith("too short")


def test_reference_slope_is_subtracted_only_when_positive():
    rising_ref = run_stats(record("reference", 200, slope_mib_h=500, noise_mib=0.2))
    ours = run_stats(record("bytecache", 210, slope_mib_h=500, noise_mib=0.2, seed=8))
    v = judge(ours, rising_ref, BUDGET)
    assert abs(v.slope.value) < 50 * MiB and v.outcome == FLAT, v.line()


def test_accounting_error():
    assert accounting_error(110, 100) == pytest.approx(0.10)
    assert accounting_error(None, 100) is None and accounting_error(100, 0) is None


def test_the_readme_states_the_criterion_the_code_uses():
    readme = (Path(__file__).resolve().parents[2] / "profiling" / "README.md").read_text()
    assert CRITERION in readme and analysis.CRITERION_WITHOUT_REFERENCE in readme
    assert f"±{100 * analysis.ACCOUNTING_BOUND:.0f}%" in readme
    assert f"±{100 * analysis.REAL_MEMORY_BOUND:.0f}% (`analysis.REAL_MEMORY_BOUND`)" in readme


def test_judge_needs_scheduler_loops_after_the_warm_up_when_they_are_recorded():
    ref, ours = record("reference", 200), record("bytecache", 210, seed=10)
    ref.loop_times = [float(t) for t in range(10, 400, 20)]
    ours.loop_times = [30.0, 90.0, 150.0, 210.0]  # a loaded machine: two loops after the 100 s warm-up
    v = judge(run_stats(ours), run_stats(ref), BUDGET)
    assert v.outcome == INCONCLUSIVE and "bytecache run finished 2 scheduler loops" in v.reason
    ours.loop_times.append(270.0)
    assert judge(run_stats(ours), run_stats(ref), BUDGET).outcome == FLAT


def test_warmup_lasts_at_least_the_warmup_loops():
    from profiling.soak.model import SoakSpec
    from profiling.workload import WorkloadSpec

    spec = SoakSpec(WorkloadSpec(), ("bytecache",), {"bytecache": 180.0}, warmup_loops=3)
    assert spec.warmup_for(180.0) == pytest.approx(81.0)  # no loop times: the share of the run
    assert spec.warmup_for(180.0, [10.0, 20.0, 30.0]) == pytest.approx(81.0)
    assert spec.warmup_for(180.0, [40.0, 80.0, 120.0, 160.0]) == pytest.approx(120.0)  # slow loops
    assert spec.warmup_for(40.0) == pytest.approx(20.0)  # the floor


def test_slope_limit_is_one_percent_per_hour_or_the_headroom_over_a_short_window():
    from profiling.soak.analysis import slope_limit

    assert slope_limit(BUDGET, 3600) == pytest.approx(0.01 * BUDGET)
    assert slope_limit(BUDGET, 240) == pytest.approx(0.25 * BUDGET / (240 / 3600))  # 8 MiB in 4 min: 120 MiB/h
    # a slight, significant drift in a short window (5 MiB/h: allocator steps) is no evidence of growth
    ref = run_stats(record("reference", 200, noise_mib=0.2))
    drift = run_stats(record("bytecache", 220, slope_mib_h=40, noise_mib=0.2, seed=11))
    v = judge(drift, ref, BUDGET)
    assert v.slope.lo > 0.01 * BUDGET and v.outcome == FLAT, v.line()


# -- speed, the cache's own cost, peaks --------------------------------------------------------
def test_loop_ratio_is_mean_and_median_over_the_other_run():
    fast, slow = analysis.loop_stats([100.0, 200.0, 300.0, 1000.0]), analysis.loop_stats([400.0, 400.0, 500.0])
    assert (fast.mean_ms, fast.p50_ms) == (400.0, 250.0)
    assert analysis.loop_ratio(fast, slow) == pytest.approx((400 / 433.3333, 250 / 400))
    assert analysis.loop_ratio(fast, None) is None and analysis.loop_stats([]) is None


def test_cache_cost_shares_of_the_scheduler_wall_time_and_the_pause_distribution():
    pauses = [float(ms) for ms in range(100, 1100, 10)]  # 100 collections: 100 ... 1090 ms
    reclaim = {"collections": 100, "collection_seconds": sum(pauses) / 1000, "trim_seconds": 1.5,
               "calibration_seconds": 2.0, "maintenance_seconds": 0.5, "overhead_seconds": sum(pauses) / 1000 + 4.0,
               "pauses_ms": pauses[::-1], "deferred_for_time": 7, "elapsed_seconds": 9000.0}
    cost = analysis.cache_cost({"uptime_s": 10000.0, "gc_full": 400, "gc_full_ms": 2_000_000.0,
                                "snapshot": {"reclaim": reclaim}})
    assert cost.wall_s == 10000.0  # the scheduler's uptime, not the bag's lifetime
    assert cost.share(cost.overhead_s) == pytest.approx((59.5 + 4.0) / 10000)
    assert cost.share(cost.collection_s) == pytest.approx(59.5 / 10000)
    assert (cost.pause_p50_ms, cost.pause_max_ms) == (pytest.approx(595.0), 1090.0)
    assert cost.pause_p99_ms == pytest.approx(1080.1)
    assert cost.deferred_for_time == 7 and cost.python_full_collections == 400 and cost.python_full_s == 2000.0
    assert analysis.cache_cost({"uptime_s": 10.0}) is None  # Airflow's own bag: nothing to report


def test_peak_excess_over_the_common_span_ignores_what_a_longer_run_reached_later():
    ref = RunRecord("reference", samples=[Sample(float(t), 200 * MiB, 0, 0, 1.0) for t in range(100)])
    ours = RunRecord("bytecache", samples=[Sample(float(t), (220 if t < 100 else 260) * MiB, 0, 0, 1.0) for t in range(300)])
    assert analysis.peak_excess(ours, ref) == 60 * MiB
    assert analysis.peak_excess(ours, ref, common_span=True) == 20 * MiB
    assert analysis.peak_excess(ours, RunRecord("reference")) is None


def test_held_bytes_peak_ratio_and_share_of_ticks_above_the_bound():
    report = {"snapshot": {"reclaim": {"held_peak_bytes": 150, "held_peak_budget": 100, "held_ticks_by_ratio":
                                       {"1.0": 50, "1.1": 20, "1.25": 10, "1.5": 15, "2.0": 5, "inf": 0}}}}
    held = analysis.held_bytes(report)
    assert held.peak_ratio == 1.5
    assert held.share_above(BOUND_FACTOR) == pytest.approx(0.2)
    assert held.share_above(1.0) == pytest.approx(0.5)
    assert analysis.held_bytes({"snapshot": {"reclaim": {"collections": 0}}}) is None  # an older record
