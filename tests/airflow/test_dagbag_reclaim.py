"""Reclaim in the bag: never on a lookup, never inside the scheduler's critical section, within
its caps; and a forked child (LocalExecutor) inherits no held lock."""

from __future__ import annotations

import gc
import os
import signal
import threading
import weakref

import airflow_helpers as helpers
import pytest
from airflow.utils.session import create_session

from bytecache.measure import Calibrator
from bytecache_airflow.dagbag import ByteBoundedDagBag
from bytecache_airflow.freezing import FREEZE_NOISE, FREEZE_POLL_INTERVAL
from bytecache_airflow.reclaim import EVICTION_RATE_WINDOW


def make_bag(clock, **kwargs) -> ByteBoundedDagBag:
    kwargs.setdefault("stats_prefix", "test.dag_bag")
    kwargs.setdefault("background", False)
    kwargs.setdefault("revalidation_interval", 1e9)
    kwargs.setdefault("calibrator", Calibrator(warmup=1, every=1_000_000))
    kwargs.setdefault("policy", "lru")  # every lookup of the other DAG evicts: churn, no luck
    kwargs.setdefault("reclaim_first_pause_ms", lambda: 0.0)  # collections from t=0 (the estimate: test_reclaim.py)
    return ByteBoundedDagBag(load_op_links=False, timer=clock, **kwargs)


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


def test_live_plus_uncollected_is_observed_at_every_miss_and_maintenance_tick(airflow_db, no_automatic_gc):
    clock = helpers.FakeClock()
    runs, weights = runs_and_weights(airflow_db, clock)
    budget = one_at_a_time(weights)
    bag = make_bag(clock, max_bytes=budget, reclaim_min_interval=1e9, reclaim_hard_min_interval=1e9)
    seen = []
    with create_session() as session:
        for run in runs + runs + runs:  # every lookup a miss that evicts the other DAG; no collection
            bag.get_dag_for_run(run, session=session)
            seen.append(bag.currsize + bag.uncollected_bytes)
    bag.maintain()
    bag.maintain()
    reclaim = bag.snapshot().reclaim
    assert reclaim["held_peak_bytes"] == max(seen) > budget  # the evicted DAGs are still in memory
    assert reclaim["held_peak_budget"] == budget
    assert sum(reclaim["held_ticks_by_ratio"].values()) == 2  # one per maintenance step
    assert reclaim["hard_fraction"] == 0.2 and reclaim["soft_fraction"] == 0.1


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def locks_owned_by(*roots) -> list:
    """Every lock reachable from ``roots`` through the attributes of bytecache's own objects (and
    the dicts, lists, tuples and sets they hold): the bag, its cache, calibrator, reclaimer,
    working set, Airflow's bag lock, the maintainer class."""
    found, seen, stack = {}, set(), list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, _LOCK_TYPES):
            found[id(obj)] = obj
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif obj in roots or (getattr(type(obj), "__module__", "") or "").split(".")[0] in ("bytecache", "bytecache_airflow"):
            stack.extend(vars(obj).values() if hasattr(obj, "__dict__") else ())
            stack.extend(getattr(obj, slot) for slot in getattr(type(obj), "__slots__", ()) if hasattr(obj, slot))
    return list(found.values())


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the holder thread, on purpose
def test_after_fork_every_lock_the_bag_owns_is_free_in_the_child(airflow_db):
    """Python 3.12+ warns when a process with threads forks (LocalExecutor re-forks a dead worker
    while the maintenance thread runs): the child must get no lock another thread held. The
    parent's maintenance thread holds every lock reachable from the bag at the fork; in the child
    each one found the same way must be free, and the bag must work."""
    from bytecache_airflow.dagbag import _Maintainer

    clock = helpers.FakeClock()
    runs, _ = runs_and_weights(airflow_db, clock)
    bag = ByteBoundedDagBag(False, max_bytes="64MiB", stats_prefix="test.dag_bag", timer=clock, background=True)
    with create_session() as session:
        bag.get_dag_for_run(runs[0], session=session)  # starts the maintenance thread, as in the scheduler
    assert any(t.name == "bytecache-dagbag-maintenance" for t in threading.enumerate())
    locks = locks_owned_by(bag, _Maintainer)
    assert len(locks) >= 8, locks  # the bag's two, Airflow's bag lock, cache, calibrator, reclaimer, working set, maintainer
    held, release = threading.Event(), threading.Event()

    def holder():
        for lock in locks:
            lock.acquire()
        held.set()
        release.wait(60)
        for lock in reversed(locks):
            lock.release()

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(30)
    pid = os.fork()
    if pid == 0:  # a deadlock is ended by the alarm (exit by SIGALRM, not 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(60)
        code = 1
        try:
            child_locks = locks_owned_by(bag, _Maintainer)
            busy = [lock for lock in child_locks if not lock.acquire(blocking=False)]
            if busy:
                code = 10 + len(busy)
            else:
                for lock in child_locks:
                    lock.release()
                with create_session() as session:
                    ok = bag.get_dag_for_run(runs[1], session=session) is not None
                bag.maintain(force=True)
                code = 0 if ok and len(child_locks) == len(locks) else 3
        finally:
            os._exit(code)
    release.set()
    thread.join(30)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # 10 + n: n locks still held in the child
    with create_session() as session:  # and the parent's bag still works
        assert bag.get_dag_for_run(runs[1], session=session) is not None
    assert bag.snapshot().cached_bytes == bag.currsize > 0


def test_reclaim_and_overhead_reach_statsd(airflow_db, monkeypatch, no_automatic_gc):
    with helpers.statsd_to_listener(monkeypatch) as listener:
        clock = helpers.FakeClock()
        runs, weights = runs_and_weights(airflow_db, clock)
        bag = make_bag(clock, max_bytes=one_at_a_time(weights), stats_prefix="scheduler.dag_bag", reclaim_hard_fraction=0.25)
        clock.advance(60)
        with create_session() as session:
            for run in [runs[0], runs[0], runs[1], runs[0]]:  # a hit (a calibration sample), then churn
                bag.get_dag_for_run(run, session=session)
        bag.maintain(force=True)
        assert bag.reclaimer.collections == 1 and bag.calibrator.samples == 1
        gauges = bag.gauges()
        assert gauges["cache_reclaim_pause_max_ms"] == round(bag.reclaimer.last_ms)
        prefix = "airflow.scheduler.dag_bag."
        assert listener.wait_for(lambda l: l.startswith(prefix + "cache_reclaims:1|c"))
        assert listener.wait_for(lambda l: l.startswith(prefix + "cache_reclaim_duration:") and l.endswith("|ms"))
        for name in ("cache_reclaim_pause_p50_ms", "cache_reclaim_pause_p99_ms", "cache_reclaim_pause_max_ms"):
            assert listener.wait_for(lambda l, n=name: l == f"{prefix}{n}:{gauges[n]}|g"), (name, listener.lines)
        assert listener.wait_for(lambda l: l == f"{prefix}cache_uncollected_bytes:0|g")  # sent after the collection
        # the overhead so far, as a counter (its rate is the share of wall time)
        overhead_ms = int(bag.overhead_seconds() * 1000)
        assert overhead_ms > 0
        assert listener.wait_for(lambda l: l.startswith(prefix + "cache_overhead_ms:") and l.endswith("|c")
                                 and 0 < int(l.split(":")[1].split("|")[0]) <= overhead_ms)


def test_the_maintenance_thread_starts_with_the_first_lookup_not_with_the_bag(airflow_db):
    """The scheduler builds its bag before LocalExecutor forks its workers: no second thread may
    exist by then (Python 3.12+ warns on fork with threads; a held lock would stay held)."""
    import subprocess
    import sys

    code = f"""
import threading
from airflow.utils.session import create_session
import airflow_helpers as helpers
from bytecache_airflow.dagbag import ByteBoundedDagBag

def maintenance_threads():
    return [t for t in threading.enumerate() if t.name == "bytecache-dagbag-maintenance"]

bag = ByteBoundedDagBag(False, max_bytes="64MiB", stats_prefix="test.dag_bag")
assert maintenance_threads() == [], "started with the bag"
with create_session() as session:
    bag.get_dag_for_run(helpers.get_run(session, {airflow_db["dags_by_size"][10]!r}), session=session)
assert len(maintenance_threads()) == 1, "not started by the first lookup"
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), *sys.path]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


# -- gc.freeze(): the cached DAGs out of Python's automatic collections ---------------------------
def frozen_bag(airflow_db, clock, **kwargs):
    """A bag that holds one of the two DAGs at a time, the 100-task one cached and frozen by a reclaim."""
    runs, weights = runs_and_weights(airflow_db, clock)
    kwargs.setdefault("max_bytes", one_at_a_time(weights))
    kwargs.setdefault("gc_freeze", True)
    bag = make_bag(clock, **kwargs)
    with create_session() as session:
        big = bag.get_dag_for_run(runs[1], session=session)
    clock.advance(60)  # past the soft trigger's interval: the first refreeze is due
    bag.maintain()
    assert bag.reclaimer.collections == 1 and helpers.frozen(big)
    return bag, runs, weakref.ref(big)


def test_a_reclaim_freezes_the_cached_dags_and_later_loads_wait_for_the_next(airflow_db, no_automatic_gc):
    clock = helpers.FakeClock()
    runs, weights = runs_and_weights(airflow_db, clock)
    bag = make_bag(clock, max_bytes=2 * sum(weights), gc_freeze=True)  # holds both
    with create_session() as session:
        first = bag.get_dag_for_run(runs[0], session=session)
        assert not helpers.frozen(first)
        clock.advance(60)
        bag.maintain()  # never frozen: a refreeze is due (a soft trigger: past min_interval)
        assert bag.reclaimer.collections == 1 and helpers.frozen(first)
        second = bag.get_dag_for_run(runs[1], session=session)
    assert not helpers.frozen(second)  # loaded after the refreeze: the automatic collector still walks it
    clock.advance(60)
    bag.maintain()  # the bytes loaded since the refreeze are over the soft fraction of the budget
    assert bag.reclaimer.collections == 2 and helpers.frozen(second) and helpers.frozen(first)
    assert bag.snapshot().reclaim["refreezes"] == 2


def test_after_pythons_own_full_collection_the_bag_freezes_what_survived(airflow_db, no_automatic_gc):
    """No collection of ours: Python's has just walked the heap, so the bag's next maintenance step
    freezes its survivors, and Python's next full collections walk only what is loaded after."""
    clock = helpers.FakeClock()
    runs, weights = runs_and_weights(airflow_db, clock)
    bag = make_bag(clock, max_bytes=2 * sum(weights), gc_freeze=True)  # holds both
    clock.advance(60)
    bag.maintain()  # the first refreeze (never frozen, past the soft trigger's interval) ...
    assert bag.reclaimer.collections == 1
    clock.advance(EVICTION_RATE_WINDOW)
    bag.maintain()  # ... and a window after it in which no frozen entry was evicted
    with create_session() as session:
        first = bag.get_dag_for_run(runs[0], session=session)
        bag.maintain()
        assert not helpers.frozen(first)  # no full collection since: nothing to follow
        gc.collect()
        bag.maintain()
        assert helpers.frozen(first) and bag.reclaimer.collections == 1  # frozen, not walked by us
        second = bag.get_dag_for_run(runs[1], session=session)
        assert not helpers.frozen(second)  # loaded after that collection: frozen after the next one
    assert bag.snapshot().reclaim["follow_freezes"] == 1
    weight, first = bag.cache.weight_of(runs[0].created_dag_version_id), weakref.ref(first)
    del bag.cache[runs[0].created_dag_version_id]
    gc.collect()  # Python's own does not free a frozen DAG: it stays counted until ours
    assert first() is not None and bag.uncollected_bytes >= weight


def test_without_gc_freeze_a_reclaim_freezes_nothing(airflow_db, no_automatic_gc):
    clock = helpers.FakeClock()
    runs, weights = runs_and_weights(airflow_db, clock)
    bag = make_bag(clock, max_bytes=one_at_a_time(weights), reclaim_hard_fraction=0.25)  # the default: off
    with create_session() as session:
        for run in runs + runs:
            bag.get_dag_for_run(run, session=session)
        clock.advance(60)
        bag.maintain()
        dag = bag.get_dag_for_run(runs[0], session=session)
    # nothing of ours is frozen (Python 3.12+ keeps a few hundred immortal objects there anyway)
    assert bag.reclaimer.collections == 1 and not helpers.frozen(dag) and gc.get_freeze_count() <= FREEZE_NOISE
    assert bag.snapshot().reclaim["gc_freeze"] is False


def test_an_evicted_frozen_dag_is_freed_by_the_next_reclaim_not_by_pythons_collections(airflow_db, no_automatic_gc):
    clock = helpers.FakeClock()
    bag, runs, big = frozen_bag(airflow_db, clock)
    weight = bag.snapshot().cached_bytes
    with create_session() as session:
        bag.get_dag_for_run(runs[0], session=session)  # evicts the frozen 100-task DAG
    gc.collect()  # Python's own full collection: it does not walk the permanent generation
    assert big() is not None
    assert bag.uncollected_bytes >= weight  # still counted: only the bag's reclaim frees it
    clock.advance(60)
    bag.maintain()
    assert bag.reclaimer.collections == 2 and big() is None and bag.uncollected_bytes == 0


def test_live_plus_uncollected_bounds_what_is_held_when_evicted_dags_are_frozen(airflow_db, no_automatic_gc):
    """Churn with a refreeze whenever allowed and Python's own full collections in between: every
    evicted DAG still in memory is counted, and live + counted stays within budget * 1.5 + one entry."""
    clock = helpers.FakeClock()
    runs, weights = runs_and_weights(airflow_db, clock)
    budget, heaviest = one_at_a_time(weights), max(weights)
    bag = make_bag(clock, max_bytes=budget, reclaim_hard_fraction=0.5, reclaim_max_time_share=1.0, gc_freeze=True)
    evicted = []  # (weak reference to the DAG, its weight)
    with create_session() as session:
        for _ in range(6):
            for run in runs:
                clock.advance(10)
                dag = bag.get_dag_for_run(run, session=session)
                evicted.append((weakref.ref(dag), bag.cache.weight_of(run.created_dag_version_id)))
                del dag
                gc.collect()
                held_evicted = sum(w for ref, w in evicted[:-1] if ref() is not None)
                assert held_evicted <= bag.uncollected_bytes  # nothing held goes uncounted
                assert bag.currsize + bag.uncollected_bytes <= budget * 1.5 + heaviest
                bag.maintain()
    assert bag.reclaimer.collections >= 3 and bag.reclaimer.freezer.refreezes >= 3


def test_a_local_executor_style_unfreeze_is_noticed_and_refrozen(airflow_db, no_automatic_gc):
    """LocalExecutor: gc.freeze(), fork its workers, gc.unfreeze() -- which unfreezes ours too."""
    clock = helpers.FakeClock()
    bag, runs, big = frozen_bag(airflow_db, clock, max_bytes="64MiB")
    clock.advance(60)
    bag.maintain()  # a tick between (nothing is due)
    scheduler_objects = [[] for _ in range(5000)]  # the scheduler allocates between ticks (a loop: tens of thousands)
    gc.freeze()  # the executor's freeze, before its forks: no refreeze may undo it
    bag.reclaimer.freezer._frozen_at -= 1e6  # even if one were due
    bag.maintain()
    assert bag.reclaimer.collections == 1
    gc.unfreeze()  # after its forks
    del scheduler_objects
    assert not helpers.frozen(big())
    bag.reclaimer.freezer._frozen_at += 1e6
    clock.advance(FREEZE_POLL_INTERVAL)
    bag.maintain()  # noticed within a poll of the freeze count, refrozen as soon as the caps allow
    assert bag.reclaimer.collections == 2 and helpers.frozen(big())
    assert bag.snapshot().reclaim["freeze_undone_by_others"] == 1


def test_overhead_counts_collections_by_wall_time_and_the_rest_by_thread_cpu_time(airflow_db, no_automatic_gc):
    """A collection holds the GIL (the scheduler loses its wall time); calibration and trims run
    while the scheduler runs too, so only their CPU time is the cache's (their wall time on a
    loaded machine is mostly waiting for a core). Each is counted once."""
    wall, cpu = helpers.FakeClock(), helpers.FakeClock()
    runs, weights = runs_and_weights(airflow_db, wall)
    bag = make_bag(wall, cpu_timer=cpu, max_bytes=one_at_a_time(weights), reclaim_hard_fraction=0.25)
    spend = lambda wall_s, cpu_s: (wall.advance(wall_s), cpu.advance(cpu_s))  # noqa: E731
    measure, collect = bag.calibrator.measure_and_record, bag.reclaimer._collect
    bag.calibrator.measure_and_record = lambda *a, **k: (spend(5.0, 0.25), measure(*a, **k))[1]
    bag.reclaimer._collect = lambda: (spend(2.0, 1.5), collect())[1]
    bag.reclaimer._trim = lambda: spend(1.0, 0.125)
    wall.advance(60)
    with create_session() as session:
        for run in [runs[0], runs[0], runs[1], runs[0]]:  # a hit (a calibration sample), then churn
            bag.get_dag_for_run(run, session=session)
    bag.maintain(force=True)
    state = bag.snapshot().reclaim
    assert bag.reclaimer.collections == 1 and bag.reclaimer.trims == 1 and bag.calibrator.samples == 1
    assert state["collection_seconds"] == 2.0 and state["calibration_seconds"] == 0.25 and state["trim_cpu_seconds"] == 0.125
    assert state["maintenance_seconds"] == 0.0  # the collection's CPU time is not counted again
    assert bag.overhead_seconds() == 2.0 + 0.25 + 0.125
