"""``profiling.cache_contents.cache_release``: the memory a real bag of real DAGs gives back when
its cache is dropped (the soak's real-memory figure, taken in the scheduler at exit)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import airflow_helpers as helpers
import pytest

from airflow.utils.session import create_session

from bytecache_airflow.dagbag import ByteBoundedDagBag
from profiling import heap
from profiling.cache_contents import cache_release, cached_dags, deep_walk

pytestmark = pytest.mark.skipif(heap.malloc_in_use() is None, reason="needs glibc's mallinfo2")
ROOT = Path(__file__).resolve().parents[2]


def filled_bag(airflow_db) -> ByteBoundedDagBag:
    bag = ByteBoundedDagBag(False, max_bytes="64MiB", stats_prefix="test.dag_bag", timer=helpers.FakeClock(), background=False)
    with create_session() as session:
        for n in (10, 100, 1000):
            bag.get_dag_for_run(helpers.get_run(session, airflow_db["dags_by_size"][n]), session=session)
    return bag


def test_dropping_the_cache_gives_back_about_the_deep_walk_of_its_dags(airflow_db):
    bag = filled_bag(airflow_db)
    walk = deep_walk(cached_dags(bag))
    result = cache_release(bag)
    assert len(bag.cache) == 0 and result["entries_dropped"] == 3 and result["survivors"] == []
    assert result["gauge"] > 0
    assert result["maintenance_paused"] and bag._maintaining.acquire(blocking=False)  # released again
    bag._maintaining.release()
    assert result["walk_bytes"] == walk["walk_bytes"]
    assert result["heap_released"] == pytest.approx(walk["walk_bytes"], rel=0.10)


def test_a_dag_held_elsewhere_is_a_survivor_and_its_memory_stays(airflow_db):
    bag = filled_bag(airflow_db)
    dags = cached_dags(bag)
    walk = deep_walk(dags)
    biggest = max(range(len(dags)), key=lambda i: walk["walk_each"][i])
    held = dags[biggest]  # as a scheduler frame holds the DAG of the run it is working on
    held_id = bag.snapshot().entries[biggest].dag_version_id
    del dags
    result = cache_release(bag)
    assert result["survivors"] == [{"dag_version_id": held_id, "walk_bytes": walk["walk_each"][biggest]}]
    others = walk["walk_bytes"] - walk["walk_each"][biggest]
    assert result["heap_released"] == pytest.approx(others, rel=0.15)
    assert held.dag_id


# A process that exits as the profiled scheduler does: SIGTERM, the report written in the handler,
# the handler's SIGTERM re-delivered shortly after (as the bootstrap does, in case a collector
# callback swallowed the first), SystemExit; the cache is dropped by the atexit hook.
EXITING_SCHEDULER = """
import atexit, os, signal, sys, uuid
from airflow.utils.session import create_session
from bytecache_airflow.dagbag import ByteBoundedDagBag
from profiling import bootstrap
bag = ByteBoundedDagBag(False, max_bytes="64MiB", stats_prefix="test.dag_bag", background=False)
with create_session() as session:
    for version in sys.argv[1:]:
        bag.get_dag(uuid.UUID(version), session)
bootstrap._state.update(bag=bag, runner_pid=os.getpid())
atexit.register(bootstrap.release_at_exit)

def exit_gracefully(signum, frame):
    bootstrap.write_report(f"signal {signum}")
    bootstrap._redeliver(signum, 0.05)
    sys.exit(0)

signal.signal(signal.SIGTERM, exit_gracefully)
os.kill(os.getpid(), signal.SIGTERM)
"""


def test_the_drop_at_exit_completes_though_sigterms_keep_coming(airflow_db, db_copy):
    versions = [str(helpers.latest_version_id(dag_id)) for dag_id in airflow_db["dags_by_size"].values()]
    report = db_copy["dir"] / "report.json"
    r = subprocess.run([sys.executable, "-c", EXITING_SCHEDULER, *versions], env=dict(db_copy["env"], BYTECACHE_PROFILE_REPORT=str(report)),
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    written = json.loads(report.read_text())
    assert written["reason"] == "signal 15" and written["entries"] == 3
    assert "Exception ignored in atexit" not in r.stderr and "release_error" not in written, r.stderr[-3000:]
    release = written["release"]
    assert release["entries_dropped"] == 3 and release["survivors"] == []
    assert release["heap_released"] == pytest.approx(release["walk_bytes"], rel=0.10)
