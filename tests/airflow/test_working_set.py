"""The working-set gauge of a real bag: versions read within the scheduler's last sweep, cached or not."""

from __future__ import annotations

import airflow_helpers as helpers

from airflow.utils.session import create_session

from bytecache_airflow.dagbag import ByteBoundedDagBag
from bytecache_airflow.weighing import dag_calibrator


def frozen_weights_bag(max_bytes, clock):
    # the priors only: every load of a version weighs the same, so expected sums are exact
    return ByteBoundedDagBag(False, max_bytes=max_bytes, ttl=None, policy="lru", background=False, timer=clock,
                             stats_prefix="test.working_set", calibrator=dag_calibrator(warmup=0, every=10**9))


def test_working_set_counts_versions_read_in_the_last_sweep_even_when_evicted(airflow_db):
    sizes = (10, 100, 1000)
    with create_session() as session:
        runs = {n: helpers.get_run(session, airflow_db["dags_by_size"][n]) for n in sizes}
        probe = frozen_weights_bag(None, helpers.FakeClock())
        for run in runs.values():
            probe.get_dag_for_run(run, session=session)
        weight = {n: probe.cache.weight_of(helpers.latest_version_id(runs[n].dag_id)) for n in sizes}

        clock = helpers.FakeClock()
        bag = frozen_weights_bag(weight[1000] + weight[10], clock)  # never all three at once
        for _ in range(4):  # four sweeps of 30 s; each run looked up twice per visit
            for n in sizes:
                bag.get_dag_for_run(runs[n], session=session)
                clock.advance(1)
                bag.get_dag_for_run(runs[n], session=session)
                clock.advance(9)
        snap = bag.snapshot()
        assert snap.cached_bytes < sum(weight.values())  # some of it evicted ...
        assert snap.working_set_entries == 3  # ... and still in the working set
        assert snap.working_set_bytes == sum(weight.values())
        assert 29 <= snap.working_set_window / bag.working_set.slack <= 30  # one sweep
        assert bag.gauges()["cache_working_set_bytes"] == sum(weight.values())

        for _ in range(3):  # the 1,000-task DAG's run is done: two sweeps without it
            for n in (10, 100):
                bag.get_dag_for_run(runs[n], session=session)
                clock.advance(1)
                bag.get_dag_for_run(runs[n], session=session)
                clock.advance(14)
        snap = bag.snapshot()
        assert snap.working_set_entries == 2
        assert snap.working_set_bytes == weight[10] + weight[100]
