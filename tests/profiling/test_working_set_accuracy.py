"""The gauge-accuracy check on a real trace (30 DAGs, 10 runs per loop: 3 loops per sweep), and
that it reports a gauge that is off."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bytecache_airflow.trace import read_trace
from profiling.working_set_accuracy import accuracy, format_table, last_loops_working_set, main

REAL = Path(__file__).resolve().parents[2] / "profiling" / "traces" / "scheduler-30dags-25pct.trace.gz"


def test_the_recorded_gauge_matches_the_truth_of_its_trace():
    acc = accuracy(read_trace(REAL), skip_loops=3, sweep_loops=3)
    assert acc["samples"] == 6 and acc["loops_skipped"] == 3
    # 30 versions of ~24 KiB, every one read within a sweep
    assert 600 * 1024 < acc["truth_median"] < 800 * 1024
    assert abs(acc["error_median"]) <= 0.10 and acc["within_target"] >= 0.5
    assert acc["sweep_truth_median"] == pytest.approx(acc["truth_median"], rel=0.10)
    table = format_table([("real", acc)])
    assert "| real | n/a | 0.7 MiB | 0.7 MiB |" in table and "(N = 3)" in table


def test_a_gauge_a_fifth_too_high_is_reported_as_such(tmp_path):
    skewed = tmp_path / "skewed.trace.gz"
    with gzip.open(REAL, "rt") as src, gzip.open(skewed, "wt") as dst:
        for line in src:
            if line.startswith("#loop"):
                parts = line.split()
                parts[3] = str(int(int(parts[3]) * 1.2))
                line = " ".join(parts) + "\n"
            dst.write(line)
    acc = accuracy(read_trace(skewed), skip_loops=3)
    assert acc["error_median"] == pytest.approx(0.2, abs=0.01) and acc["within_target"] == 0


def test_truth_by_loops_counts_the_versions_of_the_last_loops():
    trace = read_trace(REAL)
    last_loop = max(a.loop for a in trace.accesses)
    one = {a.key: a.weight for a in trace.accesses if a.loop == last_loop}
    assert last_loops_working_set(trace, last_loop, 1) == sum(one.values())
    assert last_loops_working_set(trace, last_loop, 1) < last_loops_working_set(trace, last_loop, 3)


def test_a_trace_without_gauges_is_refused(capsys):
    old = REAL.parent / "quick-soak.trace.gz"
    assert main([str(old)]) == 2
    assert "no loop marks with a working-set gauge" in capsys.readouterr().err
