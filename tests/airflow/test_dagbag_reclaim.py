"""Reclaim in the bag: never on a lookup, never inside the scheduler's critical section, within
its caps; and a forked child (LocalExecutor) inherits no held lock."""

from __future__ import annotations

import gc
import os
import signal
import threading

import airflow_helpers as helpers
import pytest
from airflow.utils.session import create_session

from bytecache.measure import Calibrator
from bytecache_airflow.dagbag import ByteBoundedDagBag


def make_bag(clock, **kwargs) -> ByteBoundedDagBag:
    kwargs.setdefault("stats_prefix", "test.dag_bag")
    kwargs.setdefault("background", False)
    kwargs.setdefault("revalidation_interval", 1e9)
    kwargs.setdefault("calibrator", Calibrator(warmup=1, every=1_000_000))
    kwargs.setdefault("policy", "lru")  # every lookup of the other DAG evicts: churn, no luck
    return ByteBoundedDagBag(load_op_links=False, timer=clock, **kwargs)


@pytest.fixture
def no_automatic_gc():
    """Only the bag's reclaim may collect while a test churns."""
    was_enabled = gc.isenabled()
    gc.disable()
    yield
    if was_enabled:
        gc.enable()


def runs_and_weights(airflow_db, clock):
    probe = make_bag(clock, max_bytes=None)
    with create_session() as session:
        runs = [helpers.get_run(session, airflow_db["dags_by_size"][n]) for n in (10, 100)]
        for run in runs:
            probe.get_dag_for_run(run, session=session)
        weights = [probe.cache.weight_of(k) for k in probe.cache]
    return runs, weights


def one_at_a_time(weights: list[int]) -> int:
    """A budget that holds either DAG alone but never both (a 10-task DAG can weigh under 10% of
    the pair, so 90% of their sum can be less than the heavier one alone: Airflow 3.1's DAGs)."""
    return max(weights) + min(weights) // 2


def test_lookups_never_collect_the_maintenance_step_does(airflow_db, no_automatic_gc):
    clock = helpers.FakeClock()
    runs, weights = runs_and_weights(airflow_db, clock)
    budget = one_at_a_time(weights)  # every lookup evicts
    bag = make_bag(clock, max_bytes=budget, reclaim_hard_fraction=0.5, maintenance_interval=0)
    clock.advance(60)  # past the one-per-10-s cap
    with create_session() as session:
        for _ in range(4):
            for run in runs:
                bag.get_dag_for_run(run, session=session)
    assert bag.uncollected_bytes >= 0.5 * budget and bag.cache.stats().evictions_size >= 6
    assert bag.reclaimer.collections == 0  # far past the hard trigger, but a lookup never collects
    bag.maintain()
    snap = bag.snapshot()
    assert snap.reclaim["collections"] == 1 and len(snap.reclaim["pauses_ms"]) == 1
    assert snap.uncollected_bytes == 0


def test_no_collection_while_the_scheduler_is_in_its_critical_section(airflow_db, no_automatic_gc):
    clock = helpers.FakeClock()
    runs, weights = runs_and_weights(airflow_db, clock)
    bag = make_bag(clock, max_bytes=one_at_a_time(weights), reclaim_hard_fraction=0.25)
    clock.advance(60)
    with create_session() as session:
        for run in runs + runs:
            bag.get_dag_for_run(run, session=session)
    assert bag.reclaimer.wanted()
    inside, leave = threading.Event(), threading.Event()

    def _critical_section_enqueue_task_instances():  # the name Airflow's scheduler uses
        inside.set()
        leave.wait(30)

    scheduler = threading.Thread(target=_critical_section_enqueue_task_instances)
    scheduler.start()
    try:
        assert inside.wait(30)
        bag.maintain()  # as the maintenance thread would, while the scheduler is in there
        assert bag.reclaimer.collections == 0 and bag.deferred_for_critical_section == 1
    finally:
        leave.set()
        scheduler.join(30)
    bag.maintain()  # the next maintenance step, outside it
    assert bag.reclaimer.collections == 1
    assert bag.snapshot().reclaim["deferred_for_critical_section"] == 1


def test_live_plus_uncollected_stays_within_budget_plus_margin(airflow_db, no_automatic_gc):
    """Churn through a budget smaller than the set with the maintenance step after each lookup
    (10 s apart): currsize + uncollected <= budget * (1 + hard_fraction) + one entry."""
    clock = helpers.FakeClock()
    runs, weights = runs_and_weights(airflow_db, clock)
    budget, heaviest = one_at_a_time(weights), max(weights)
    bag = make_bag(clock, max_bytes=budget, reclaim_hard_fraction=0.5, reclaim_min_interval=1e9,
                   reclaim_max_time_share=1.0)
    with create_session() as session:
        for _ in range(6):
            for run in runs:
                clock.advance(10)
                bag.get_dag_for_run(run, session=session)
                assert bag.currsize <= budget
                assert bag.currsize + bag.uncollected_bytes <= budget * 1.5 + heaviest
                bag.maintain()
    assert bag.reclaimer.collections >= 3 and bag.cache.stats().evictions_size >= 6


def test_a_forked_child_inherits_no_held_lock(airflow_db):
    """LocalExecutor forks the scheduler while the maintenance thread may hold the bag's locks;
    only the forking thread lives on in the child, so a lock it held would never be released."""
    clock = helpers.FakeClock()
    runs, _ = runs_and_weights(airflow_db, clock)
    bag = ByteBoundedDagBag(False, max_bytes="64MiB", stats_prefix="test.dag_bag", timer=clock, background=True)
    held, release = threading.Event(), threading.Event()
    locks = [bag._maintaining, bag._samples_lock, bag._lock, bag._cache._lock, bag.reclaimer._lock, bag.calibrator._lock]

    def maintenance_thread_mid_step():
        for lock in locks:
            lock.acquire()
        held.set()
        release.wait(60)
        for lock in reversed(locks):
            lock.release()

    holder = threading.Thread(target=maintenance_thread_mid_step)
    holder.start()
    assert held.wait(30)
    pid = os.fork()
    if pid == 0:  # the child: a deadlock is ended by the alarm (exit by SIGALRM, not 0)
        signal.alarm(60)
        code = 1
        try:
            with create_session() as session:
                dag = bag.get_dag_for_run(runs[0], session=session)
            bag.maintain(force=True)
            snap = bag.snapshot()
            code = 0 if dag is not None and snap.cached_bytes == bag.currsize > 0 else 3
        finally:
            os._exit(code)
    release.set()
    holder.join(30)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with create_session() as session:  # and the parent's bag still works
        assert bag.get_dag_for_run(runs[1], session=session) is not None
