"""The scheduler access trace: both formats read, the truth the gauge is checked against, and the
miss-ratio curve the sizing command prints, on a real trace (a real SchedulerJobRunner over 30
DAGs, 10 runs per loop, bytecache at 25% of the working set: ``profiling.scheduler_misses``)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from bytecache_airflow.missratio import LRU_ENTRIES, miss_ratio_curve
from bytecache_airflow.trace import Access, access_line, loop_line, read_trace, true_working_set

TRACES = Path(__file__).resolve().parents[2] / "profiling" / "traces"
REAL = TRACES / "scheduler-30dags-25pct.trace.gz"
OLD = TRACES / "quick-soak.trace.gz"


def test_lines_round_trip_and_old_traces_read_without_times(tmp_path):
    path = tmp_path / "t.trace"
    path.write_text(access_line("a" * 32, 100, 12.5, 3, 4.25) + access_line("b" * 32, 7, 13.0, 3, None)
                    + loop_line(3, 13.5, 107, 2, 1.5) + loop_line(4, 14.0, None, None, None))
    trace = read_trace(path)
    assert trace.accesses == (Access("a" * 32, 100, 12.5, 3, 4.25), Access("b" * 32, 7, 13.0, 3, None))
    assert [tuple(m) for m in trace.loops] == [(3, 13.5, 107, 2, 1.5), (4, 14.0, None, None, None)]
    assert trace.timed and trace.loop_count() == 2 and trace.seconds() == pytest.approx(1.5)
    old = read_trace(OLD)  # recorded before the times were added: versions and weights only
    assert len(old.accesses) == 298 and not old.loops and not old.timed
    assert all(a.t is None and a.loop is None and a.weight > 0 for a in old.accesses)


def test_a_malformed_line_is_refused_with_its_file_and_number(tmp_path):
    path = tmp_path / "bad.trace.gz"
    with gzip.open(path, "wt") as f:
        f.write(access_line("a" * 32, 1, 1.0, 1, None) + "abc notanumber\n")
    with pytest.raises(ValueError, match=r"bad.trace.gz:2: not a trace line: 'abc notanumber'"):
        read_trace(path)


def test_truth_counts_what_was_read_within_the_sweep_window():
    # three keys swept every 10 s, then "c" is superseded by "d" (never read again)
    accesses = []
    for sweep in range(4):
        for i, key in enumerate("abc" if sweep < 2 else "abd"):
            accesses.append(Access(key, {"a": 1, "b": 10, "c": 100, "d": 1000}[key], 10.0 * sweep + i, sweep + 1))
    truth = true_working_set(accesses, [9.0, 22.5, 27.0, 41.0])
    # no key read twice yet at t=9: everything read so far, no window
    assert truth[0][1:] == (111, 3, None)
    # at 22.5 the gaps are 10 s: window 12.5 s reaches back to 10.0, so "c" (last at 12) still counts
    assert truth[1].window == pytest.approx(12.5) and truth[1][1:3] == (1111, 4)
    # at 27 the window reaches back to 14.5: "c" (last at 12) is out, its successor "d" in
    assert truth[2][1:3] == (1011, 3)
    assert truth[3][1:3] == (1011, 3)


def test_miss_ratio_curve_of_a_real_trace():
    trace = read_trace(REAL)
    assert trace.timed and len(trace.loops) == trace.loop_count() == 9
    curve = miss_ratio_curve(trace)
    assert curve.warmup_loops == 3 and curve.working_set_entries == 30
    ours = [p for p in curve.points if p.cache == "bytecache"]
    lru = [p for p in curve.points if p.cache == "airflow-lru"]
    assert [p.setting for p in lru] == [f"{n} entries" for n in LRU_ENTRIES]
    # 30 versions fit every LRU: after the warm-up, nothing misses; it holds all 30 (their weight)
    assert all(p.misses_per_loop == 0 and p.hit_ratio == 1 for p in lru)
    assert all(p.memory_bytes >= curve.working_set_bytes for p in lru)
    # the curve: a tenth of the working set misses nearly every lookup, room for it all misses none
    assert ours[0].misses_per_loop > 15 and ours[0].deserialize_s_per_min > 0
    assert ours[-1].misses_per_loop == 0 and ours[-1].deserialize_s_per_min == 0
    assert ours[0].memory_bytes < ours[-1].memory_bytes
    # replayed at the recorded run's own budget (25%), the replay misses what the run missed
    at_25 = next(p for p in ours if p.setting == "25% of the working set")
    assert at_25.misses_per_loop == pytest.approx(curve.recorded_misses_per_loop, rel=0.25)
    assert "recorded load time of 30 of 30 versions" in curve.cost_source


def test_a_trace_without_times_has_no_curve():
    with pytest.raises(ValueError, match="no times and loop numbers"):
        miss_ratio_curve(read_trace(OLD))


def test_the_profiling_writer_records_a_real_bag_s_lookups_weights_and_gauge(airflow_db, tmp_path):
    import airflow_helpers as helpers
    from airflow.utils.session import create_session

    from bytecache_airflow.dagbag import ByteBoundedDagBag
    from profiling.bootstrap import TraceWriter, instrument_bag

    # the bag's clock is injected: the gauge at the loop mark must not depend on how long the
    # machine took between the reads and the mark (under load, a real clock's gap left the read
    # outside the working-set window and the gauge read 0)
    bag = ByteBoundedDagBag(False, max_bytes=None, background=False, stats_prefix="test.trace", timer=helpers.FakeClock())
    counts = {"lookups": 0, "hits": 0, "misses": 0, "loops": 1}
    path = tmp_path / "trace.txt.gz"
    writer = TraceWriter(str(path), None, 3.8)
    instrument_bag(bag, counts, writer)
    with create_session() as session:
        run = helpers.get_run(session, "tiny")
        bag.get_dag_for_run(run, session=session)  # a miss: loads it
        bag.get_dag_for_run(run, session=session)  # a hit
    writer.mark_loop(bag, 1)
    writer.close()
    writer.record(bag, helpers.latest_version_id("tiny"), 2, None)  # after the exit report: not traced
    trace = read_trace(path)
    key = helpers.latest_version_id("tiny")
    assert counts["misses"] == 1 and counts["hits"] == 1 and writer.records == 2
    assert [(a.key, a.weight, a.loop) for a in trace.accesses] == [(key.hex, bag.cache.weight_of(key), 1)] * 2
    assert trace.accesses[0].load_ms > 0 and trace.accesses[1].load_ms is None
    assert trace.accesses[0].t <= trace.accesses[1].t <= trace.loops[0].t
    mark = trace.loops[0]
    assert (mark.loop, mark.working_set_bytes, mark.working_set_entries) == (1, bag.cache.weight_of(key), 1)
