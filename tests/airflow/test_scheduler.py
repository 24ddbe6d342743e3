"""The plugin in a real scheduler: in process (SchedulerJobRunner), over statsd, and as `airflow scheduler`."""

from __future__ import annotations

import logging
import sqlite3
import subprocess

import airflow_helpers as helpers
import pytest

from airflow.jobs import scheduler_job_runner
from airflow.jobs.job import Job
from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
from airflow.utils.session import create_session

from bytecache_airflow import hooks, versions
from bytecache_airflow.dagbag import ByteBoundedDagBag

RELEASE = versions.current()
AIRFLOWS_BAG = RELEASE.airflow_bag_class()  # what this Airflow's runner builds its bag from
# What each release's scheduler caches (read from its scheduler_job_runner.py): entries held at
# most, None for a dict that never evicts.
STOCK_CAPACITY = {"3.1": None, "3.2": None, "3.3": 512}[RELEASE.minor]
STOCK_CACHE = "Airflow's unbounded DAG dict" if STOCK_CAPACITY is None else f"Airflow's {STOCK_CAPACITY}-entry LRU"


def build_runner() -> SchedulerJobRunner:
    return SchedulerJobRunner(job=Job(), num_runs=1)


def test_plugin_is_registered_through_the_entry_point(airflow_db):
    plugins, errors = helpers.loaded_plugins()
    assert "bytecache" in {p.name for p in plugins}
    assert not [e for name, e in errors.items() if "bytecache" in name and "already registered" not in e]


def test_scheduler_runner_builds_our_bag_with_the_configured_budget(airflow_db, monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES", "256MiB")
    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_TTL", "900")
    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_POLICY", "lru")
    with caplog.at_level(logging.INFO, logger="bytecache_airflow"):
        runner = build_runner()
    bag = runner.scheduler_dag_bag
    assert isinstance(bag, ByteBoundedDagBag) and isinstance(bag, AIRFLOWS_BAG)
    assert (bag.max_bytes, bag.ttl, bag.policy) == (256 * 1024**2, 900.0, "lru")
    assert bag._stats_prefix == "scheduler.dag_bag" and bag.load_op_links is False
    lines = [r.getMessage() for r in caplog.records if "scheduler DAG cache" in r.getMessage()]
    assert lines == [f"bytecache: scheduler DAG cache budget=256.0 MiB (268435456 bytes), ttl=900s, policy=lru, gc_freeze=off (replaces {STOCK_CACHE})"]
    assert bag.reclaimer.freezer is None  # dag_cache_gc_freeze defaults to off
    # the bag works for the scheduler's own call
    with create_session() as session:
        run = helpers.get_run(session, airflow_db["dags_by_size"][10])
        assert bag.get_dag_for_run(run, session=session).dag_id == run.dag_id


def test_dag_cache_gc_freeze_true_makes_the_cache_freeze_what_survives_its_collections(airflow_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES", "256MiB")
    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_GC_FREEZE", "True")
    bag = build_runner().scheduler_dag_bag
    assert isinstance(bag, ByteBoundedDagBag) and bag.reclaimer.freezer is not None
    assert bag.snapshot().reclaim["gc_freeze"] is True


def test_installed_but_not_configured_keeps_airflows_cache_and_says_how_to_enable(airflow_db, monkeypatch, caplog):
    # Installing the package must not change a scheduler by itself: dag_cache_max_bytes opts in.
    monkeypatch.delenv("AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES", raising=False)
    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_TTL", "900")  # set, but not the opt-in
    with caplog.at_level(logging.INFO, logger="bytecache_airflow"):
        bag = build_runner().scheduler_dag_bag
    assert type(bag) is AIRFLOWS_BAG
    assert getattr(bag._dags, "maxsize", None) == STOCK_CAPACITY
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bytecache:")]
    assert lines == [
        "bytecache: installed but not enabled for the scheduler; using Airflow's own DAG cache. To enable it set "
        f"[scheduler] dag_cache_max_bytes (e.g. 512MiB, or 0 for no byte cap) ({STOCK_CACHE})"
    ]


def test_policy_airflow_keeps_airflows_own_cache(airflow_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_POLICY", "airflow")
    bag = build_runner().scheduler_dag_bag
    assert type(bag) is AIRFLOWS_BAG
    assert getattr(bag._dags, "maxsize", None) == STOCK_CAPACITY
    assert STOCK_CAPACITY is None or STOCK_CAPACITY == scheduler_job_runner.SCHEDULER_DAG_CACHE_SIZE


@pytest.mark.parametrize(("value", "expected"), [("512B", 512), ("1MiB", 1024**2), ("16777216", 16 * 1024**2)])
def test_small_budget_accepted_with_an_explicit_unit(airflow_db, monkeypatch, value, expected):
    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES", value)
    assert build_runner().scheduler_dag_bag.max_bytes == expected


def test_ttl_below_the_revalidation_window_warns_once(airflow_db, monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES", "64MiB")
    monkeypatch.setenv("AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL", "30")
    warnings = {}
    for ttl in ("10", "30", "0"):  # 0 = no idle expiry: nothing to warn about
        monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_TTL", ttl)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bytecache_airflow"):
            build_runner()
        warnings[ttl] = [r.getMessage() for r in caplog.records if r.name == "bytecache_airflow"]
    assert len(warnings["10"]) == 1 and warnings["10"][0].startswith(
        "bytecache: [scheduler] dag_cache_ttl = 10s is shorter than [core] min_serialized_dag_update_interval = 30s"
    ), warnings
    assert warnings["30"] == [] and warnings["0"] == []


def test_zero_budget_means_no_byte_cap(airflow_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES", "0")
    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_TTL", "0")
    bag = build_runner().scheduler_dag_bag
    assert bag.max_bytes is None and bag.ttl is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("DAG_CACHE_MAX_BYTES", "-5"), ("DAG_CACHE_MAX_BYTES", "lots"), ("DAG_CACHE_MAX_BYTES", "512"),
     ("DAG_CACHE_TTL", "soon"), ("DAG_CACHE_TTL", "-1"), ("DAG_CACHE_POLICY", "fifo")],
)
def test_bad_value_stops_runner_construction(airflow_db, monkeypatch, key, value):
    # validated also when the budget (the opt-in) is not set: a typo is reported, not ignored
    monkeypatch.setenv(f"AIRFLOW__SCHEDULER__{key}", value)
    with pytest.raises(SystemExit) as info:
        build_runner()
    message = str(info.value.code)
    assert f"[scheduler] {key.lower()} = {value!r}" in message and "\n" not in message


def test_bare_budget_below_the_floor_says_why(airflow_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES", "512")
    with pytest.raises(SystemExit) as info:
        build_runner()
    assert str(info.value.code) == (
        "bytecache: [scheduler] dag_cache_max_bytes = '512' is below 16.0 MiB: it is a budget in bytes, not a "
        "number of DAGs like Airflow's 512-entry cache, and 512 bytes cannot hold a typical DAG; give a unit "
        "such as 512MiB (or 512B if you mean bytes)"
    )


def test_missing_hook_point_warns_and_leaves_airflow_alone(airflow_db, monkeypatch, caplog):
    class NotAirflowsBag(AIRFLOWS_BAG):
        pass

    monkeypatch.setattr(scheduler_job_runner, RELEASE.builder, NotAirflowsBag)
    monkeypatch.setattr(hooks, "_warned_missing", False)
    with caplog.at_level(logging.WARNING, logger="bytecache_airflow"):
        assert hooks.install_scheduler_hook() is False
        bag = build_runner().scheduler_dag_bag
    assert type(bag) is NotAirflowsBag
    warnings = [r.getMessage() for r in caplog.records if "hook point missing" in r.getMessage()]
    assert len(warnings) == 1 and "leaving Airflow's DAG cache unchanged" in warnings[0]
    monkeypatch.undo()
    assert hooks.install_scheduler_hook() is True


def test_unsupported_release_line_warns_and_leaves_airflow_alone(airflow_db, monkeypatch, caplog):
    hooks.uninstall_scheduler_hook()
    monkeypatch.setattr(versions, "airflow_version", lambda: "3.0.6")
    monkeypatch.setattr(hooks, "_warned_missing", False)
    versions.current.cache_clear()
    try:
        with pytest.raises(versions.UnsupportedAirflow):
            versions.current()
        with caplog.at_level(logging.WARNING, logger="bytecache_airflow"):
            assert hooks.install_scheduler_hook() is False
            bag = build_runner().scheduler_dag_bag
        assert type(bag) is AIRFLOWS_BAG
        warnings = [r.getMessage() for r in caplog.records if r.name == "bytecache_airflow"]
        assert warnings == [
            "bytecache: Airflow 3.0.6 is not supported (supported: 3.1, 3.2, 3.3); leaving Airflow's DAG cache unchanged"
        ]
    finally:
        monkeypatch.undo()
        versions.current.cache_clear()
    assert versions.current() is RELEASE
    assert hooks.install_scheduler_hook() is True


def test_a_wrapped_runner_constructor_still_gets_our_bag(airflow_db, monkeypatch):
    import functools

    original = scheduler_job_runner.SchedulerJobRunner.__init__

    @functools.wraps(original)
    def profiled_init(self, *args, **kwargs):  # what a profiler or a test patch looks like
        return original(self, *args, **kwargs)

    monkeypatch.setenv("AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES", "64MiB")
    monkeypatch.setattr(scheduler_job_runner.SchedulerJobRunner, "__init__", profiled_init)
    monkeypatch.setattr(scheduler_job_runner, RELEASE.builder, AIRFLOWS_BAG)
    assert hooks.install_scheduler_hook() is True
    assert isinstance(build_runner().scheduler_dag_bag, ByteBoundedDagBag)


def test_statsd_receives_cache_bytes_gauge_equal_to_currsize(airflow_db, monkeypatch):
    with helpers.statsd_to_listener(monkeypatch) as listener:
        bag = ByteBoundedDagBag(False, max_bytes="128MiB", stats_prefix="scheduler.dag_bag", background=False)
        with create_session() as session:
            for n in (10, 100):
                run = helpers.get_run(session, airflow_db["dags_by_size"][n])
                bag.get_dag_for_run(run, session=session)
                bag.get_dag_for_run(run, session=session)
        bag.maintain(force=True)
        expected = f"airflow.scheduler.dag_bag.cache_bytes:{bag.currsize}|g"
        assert listener.wait_for(lambda line: line == expected), listener.lines
        assert listener.wait_for(lambda l: l == f"airflow.scheduler.dag_bag.cache_max_bytes:{128 * 1024**2}|g")
        assert listener.wait_for(lambda l: l == "airflow.scheduler.dag_bag.cache_size:2|g")
        assert listener.wait_for(lambda l: l.startswith("airflow.scheduler.dag_bag.cache_miss:1|c"))
        assert listener.wait_for(lambda l: l.startswith("airflow.scheduler.dag_bag.cache_hit:1|c"))
        assert listener.wait_for(lambda l: l.startswith("airflow.scheduler.dag_bag.cache_load:") and l.endswith("|ms"))
        # gauges are sent on change only: an unchanged flush sends nothing (maintain() adds its
        # own duration to cache_overhead_ms after its flush, so one flush first catches up on that)
        bag.flush_gauges()
        assert bag.flush_gauges() == {}


def _tiny_run_state(db_path) -> str:
    with sqlite3.connect(str(db_path)) as conn:
        return conn.execute("SELECT state FROM dag_run WHERE dag_id = 'tiny' ORDER BY id DESC LIMIT 1").fetchone()[0]


def _counter_total(lines: list[str], name: str) -> int:
    return sum(int(line.split(":", 1)[1].split("|", 1)[0]) for line in lines if line.startswith(f"{name}:"))


def test_airflow_scheduler_subprocess_logs_startup_line_and_completes_a_run(db_copy):
    """Real scheduler loops through our bag: the run completes and the cache is hit, as a real
    statsd endpoint sees it."""
    listener = helpers.StatsdListener()
    env = db_copy["env"]
    env.update({
        "AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES": "96MiB",
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
    })
    assert _tiny_run_state(db_copy["db"]) == "running"
    with sqlite3.connect(str(db_copy["db"])) as conn:
        dags_running = conn.execute("SELECT count(DISTINCT dag_id) FROM dag_run WHERE state = 'running'").fetchone()[0]
    try:
        proc = helpers.run_airflow(["scheduler", "--num-runs", "10", "--skip-serve-logs"], env=env, timeout=240,
                                   cwd=db_copy["dir"])
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-5000:]
        # the last gauges are sent when the scheduler exits; wait for the loop counter first
        assert listener.wait_for(lambda l: l.startswith("airflow.scheduler.dag_bag.cache_hit:")), listener.lines[-50:]
        lines = list(listener.lines)
    finally:
        listener.close()
    assert output.count("bytecache: scheduler DAG cache budget=96.0 MiB (100663296 bytes), ttl=3600s, policy=tinylfu") == 1, output[-5000:]
    assert _tiny_run_state(db_copy["db"]) == "success", output[-5000:]
    hits = _counter_total(lines, "airflow.scheduler.dag_bag.cache_hit")
    misses = _counter_total(lines, "airflow.scheduler.dag_bag.cache_miss")
    # each DAG with a running run is loaded once (the budget holds them all), then served from
    # the cache on later loops
    assert 1 <= misses <= dags_running and hits > misses, (hits, misses, dags_running)
    assert any(l.startswith("airflow.scheduler.dag_bag.cache_max_bytes:100663296|g") for l in lines)
    cache_bytes = [int(l.split(":")[1].split("|")[0]) for l in lines if l.startswith("airflow.scheduler.dag_bag.cache_bytes:")]
    assert cache_bytes and max(cache_bytes) > 0


def test_bad_values_make_airflow_scheduler_exit_with_the_message(db_copy):
    cases = {
        ("DAG_CACHE_MAX_BYTES", "-1GB"): "[scheduler] dag_cache_max_bytes = '-1GB' is not a valid size",
        ("DAG_CACHE_MAX_BYTES", "plenty"): "[scheduler] dag_cache_max_bytes = 'plenty' is not a valid size",
        ("DAG_CACHE_TTL", "an hour"): "[scheduler] dag_cache_ttl = 'an hour' is not a valid TTL",
        ("DAG_CACHE_POLICY", "mru"): "[scheduler] dag_cache_policy = 'mru' is not a valid policy",
        ("DAG_CACHE_GC_FREEZE", "sometimes"): "[scheduler] dag_cache_gc_freeze = 'sometimes' is not a boolean",
    }
    procs = {}
    for (key, value), message in cases.items():  # all at once: each start-up is mostly imports
        env = dict(db_copy["env"], **{f"AIRFLOW__SCHEDULER__{key}": value})
        procs[message] = subprocess.Popen(
            [helpers.AIRFLOW_BIN, "scheduler", "--num-runs", "1", "--skip-serve-logs"],
            env=env, cwd=db_copy["dir"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    for message, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode != 0, (message, out[-3000:], err[-3000:])
        lines = [line for line in err.splitlines() if message in line]
        assert len(lines) == 1 and lines[0].startswith("bytecache: "), (message, err[-3000:])
    assert _tiny_run_state(db_copy["db"]) == "running"  # none of them scheduled anything
