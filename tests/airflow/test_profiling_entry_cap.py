"""``BYTECACHE_PROFILE_DAG_CACHE_SIZE`` (profiling.bootstrap) caps the real scheduler's own bag:
the soak's 1-entry reference run, on 3.3 through ``SCHEDULER_DAG_CACHE_SIZE`` and on 3.2 through
``DBDagBag(cache_size=...)``; 3.1's bag takes no cap and the bootstrap refuses."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from airflow_helpers import latest_version_id

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = tuple(int(x) for x in version("apache-airflow-core").split(".")[:2])

# The plugin's hook goes in first (the worst order for us): the cap must still build Airflow's own
# bag. Then a real SchedulerJobRunner builds its bag and looks up two real DAG versions.
SCRIPT = """
import sys, uuid
from bytecache_airflow.hooks import install_scheduler_hook
install_scheduler_hook(import_module=True)
from profiling import bootstrap
bootstrap.install()
from airflow.jobs.job import Job
from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
from airflow.utils.session import create_session
bag = SchedulerJobRunner(job=Job(), num_runs=1).scheduler_dag_bag
with create_session() as session:
    found = [bag.get_dag(uuid.UUID(v), session) is not None for v in sys.argv[1:]]
print(type(bag).__name__, type(bag._dags).__name__, getattr(bag._dags, "maxsize", None), len(bag._dags), all(found))
"""


def run_capped(db_copy, size: str, versions: list[str]) -> subprocess.CompletedProcess:
    env = dict(db_copy["env"], BYTECACHE_PROFILE_DAG_CACHE_SIZE=size, AIRFLOW__SCHEDULER__DAG_CACHE_POLICY="airflow")
    return subprocess.run([sys.executable, "-c", SCRIPT, *versions], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(AIRFLOW < (3, 2), reason="3.1's DBDagBag takes no cache_size")
def test_the_reference_cap_gives_the_scheduler_a_one_entry_airflow_lru(airflow_db, db_copy):
    versions = [str(latest_version_id(dag_id)) for dag_id in airflow_db["dags_by_size"].values()]
    r = run_capped(db_copy, "1", versions)
    assert r.returncode == 0, r.stderr[-3000:]
    bag_class, store, maxsize, entries, found = r.stdout.split()[-5:]
    expected_class = "CachedDBDagBag" if AIRFLOW >= (3, 3) else "DBDagBag"
    assert (bag_class, store, maxsize, entries, found) == (expected_class, "LRUCache", "1", "1", "True")


@pytest.mark.skipif(AIRFLOW >= (3, 2), reason="3.2+ take a cap")
def test_on_31_the_cap_is_refused_by_name(db_copy):
    r = run_capped(db_copy, "1", [])
    assert r.returncode != 0
    assert "BYTECACHE_PROFILE_DAG_CACHE_SIZE=1 needs Airflow's SCHEDULER_DAG_CACHE_SIZE" in r.stderr
