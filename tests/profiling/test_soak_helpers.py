"""The soak's pure helpers: slope fit, flatness limit, verdict, statsd parsing."""

from __future__ import annotations

import math

import pytest

from profiling.scheduler_soak import (
    MB,
    fit_slope,
    margin_mb,
    parse_statsd,
    percentile,
    slope_limit_mb_h,
    slope_mb_per_hour,
    slope_stderr_mb_per_hour,
    verdict,
)


def test_fit_slope_exact_line_and_degenerate_input():
    ts = [0, 1, 2, 3, 4]
    assert fit_slope(ts, [3 + 2 * t for t in ts]) == pytest.approx(2.0)
    assert fit_slope([1.0], [5.0]) == 0.0
    assert fit_slope([2, 2, 2], [1, 2, 3]) == 0.0


def test_fit_slope_least_squares_on_noise():
    ts = list(range(10))
    ys = [t + (0.5 if t % 2 else -0.5) for t in ts]  # zero-mean alternating noise around y = t
    assert fit_slope(ts, ys) == pytest.approx(1.0, abs=0.1)


def test_slope_mb_per_hour_uses_only_samples_after_warmup():
    # 100 MB/h after t=600 s; a steep warm-up before it must not count
    samples = [(t, int((200 + (t if t < 600 else 600 + (t - 600) * 100 / 3600)) * MB)) for t in range(0, 1800, 10)]
    assert slope_mb_per_hour(samples, 600) == pytest.approx(100.0, rel=1e-3)
    assert slope_mb_per_hour([(t, 300 * MB) for t in range(0, 100)], 10) == pytest.approx(0.0)


def test_slope_limit_is_one_percent_of_budget_for_long_windows():
    assert slope_limit_mb_h(512 * MB, 3600) == pytest.approx(5.12)
    # short fit windows cannot resolve that: at least 8 MB of drift over the window
    assert slope_limit_mb_h(512 * MB, 120) == pytest.approx(8 / (120 / 3600))


def test_margin_has_a_floor():
    assert margin_mb(512 * MB) == pytest.approx(128)
    assert margin_mb(8 * MB) == pytest.approx(16)


def test_verdict_flat_and_not_flat():
    budget = 256 * MB
    v = verdict(slope=1.0, peak=500 * MB, baseline=200 * MB, budget=budget, fit_window_s=3600)
    assert v.flat and v.line().startswith("RSS flat: yes (slope 1.0 MB/h")
    assert "peak − baseline 300.0 MB ≤ budget 256.0 MB + margin 64.0 MB" in v.line()
    too_high = verdict(slope=1.0, peak=600 * MB, baseline=200 * MB, budget=budget, fit_window_s=3600)
    assert not too_high.flat and too_high.line().startswith("RSS flat: no") and "400.0 MB >" in too_high.line()
    growing = verdict(slope=50.0, peak=300 * MB, baseline=200 * MB, budget=budget, fit_window_s=3600)
    assert not growing.flat and "50.0 MB/h > 2.6 MB/h" in growing.line()


def test_parse_statsd_lines_types_and_rates():
    pkt = "airflow.scheduler.dag_bag.cache_hit:1|c\nairflow.scheduler.dag_bag.cache_bytes:1234|g\n" \
          "airflow.scheduler.scheduler_loop_duration:12.5|ms\nairflow.x:2|c|@0.5\ngarbage\nbad:x|c"
    assert parse_statsd(pkt) == [
        ("airflow.scheduler.dag_bag.cache_hit", 1.0, "c"),
        ("airflow.scheduler.dag_bag.cache_bytes", 1234.0, "g"),
        ("airflow.scheduler.scheduler_loop_duration", 12.5, "ms"),
        ("airflow.x", 4.0, "c"),
    ]


def test_percentile():
    assert percentile([5, 1, 3, 2, 4], 0.5) == 3
    assert percentile(list(range(1, 101)), 0.95) == 95
    assert math.isnan(percentile([], 0.5))


def test_verdict_subtracts_the_reference_slope_but_not_a_negative_one():
    budget = 64 * MB
    v = verdict(slope=700.0, peak=260 * MB, baseline=235 * MB, budget=budget, fit_window_s=55, reference_slope=780.0)
    assert v.flat and v.excess_slope == pytest.approx(-80.0)
    assert "above the reference run's 780.0 MB/h" in v.line()
    v = verdict(slope=700.0, peak=260 * MB, baseline=235 * MB, budget=budget, fit_window_s=3600, reference_slope=-50.0)
    assert not v.flat and v.excess_slope == pytest.approx(700.0)


def test_slope_stderr_is_zero_on_a_line_and_grows_with_noise():
    line = [(t, int((200 + t / 100) * MB)) for t in range(0, 1800)]
    assert slope_stderr_mb_per_hour(line, 600) == pytest.approx(0.0, abs=0.05)
    # a 10-minute, +-8 MB square wave around a flat line: the fit's slope is noise, and says so
    wave = [(t, int((300 + (8 if (t // 300) % 2 else -8)) * MB)) for t in range(0, 1800)]
    se = slope_stderr_mb_per_hour(wave, 600)
    assert se is not None and se > 5.0
    assert abs(slope_mb_per_hour(wave, 600)) < 3 * se
    assert slope_stderr_mb_per_hour(line, 1700) is None  # under three minute blocks


def test_reference_from_an_earlier_report(tmp_path):
    import json

    from profiling.scheduler_soak import load_reference, workload_line

    (tmp_path / "metrics.json").write_text(json.dumps({"reference": {"peak": 250 * MB, "slope": -3.0}, "bytecache": {}}))
    (tmp_path / "rss.csv").write_text("config,t_s,rss_bytes,pss_bytes\nreference,0.0,100,50\nbytecache,0.0,7,7\nreference,1.0,200,90\n")
    (tmp_path / "redeploys.csv").write_text("config,t_s\nreference,5.0\nbytecache,5.0\n")
    ref = load_reference(tmp_path)
    assert ref.name == "reference" and ref.source == tmp_path and ref.metrics["peak"] == 250 * MB
    assert ref.samples == [(0.0, 100, 50), (1.0, 200, 90)] and ref.redeploys == [5.0]
    assert workload_line("# x\n\nWorkload: 3 DAGs (seed 1); active set ≈ 2 MB; budget 1 MB; each run 60 s\n") == "Workload: 3 DAGs (seed 1); active set ≈ 2 MB"
    (tmp_path / "metrics.json").write_text(json.dumps({"bytecache": {}}))
    with pytest.raises(ValueError, match="has no reference run"):
        load_reference(tmp_path)
