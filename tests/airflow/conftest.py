"""Real Airflow, real SQLite metadata DB: one ``airflow db migrate`` per session.

The environment is set here, at import, before anything imports ``airflow`` (pytest imports a
directory's conftest before its test modules). Tests that must not share state (scheduler
subprocesses) work on a copy of the session's SQLite file.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

if "airflow" in sys.modules and "AIRFLOW_HOME" not in os.environ:  # pragma: no cover
    raise RuntimeError("tests/airflow must configure AIRFLOW_HOME before airflow is imported")

_HOME = Path(tempfile.mkdtemp(prefix="bytecache-airflow-"))
_DAGS = _HOME / "dags"
_DAGS.mkdir()
(_HOME / "plugins").mkdir()

BASE_ENV = {
    "AIRFLOW_HOME": str(_HOME),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
    "AIRFLOW__CORE__DAGS_FOLDER": str(_DAGS),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(_HOME / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__PARALLELISM": "2",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    # let the tests rewrite a DAG right away (the bags under test get their window explicitly)
    "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    "AIRFLOW__API_AUTH__JWT_SECRET": "bytecache-tests-secret",
    "AIRFLOW__API__SECRET_KEY": "bytecache-tests-secret",
}
for _k in [k for k in os.environ if k.startswith("AIRFLOW__") and k not in BASE_ENV]:
    del os.environ[_k]
os.environ.update(BASE_ENV)

import airflow_helpers as helpers  # noqa: E402  (after the environment is set; found through pytest's pythonpath)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_env() -> dict:
    return {
        "home": _HOME,
        "dags": _DAGS,
        "db": _HOME / "airflow.db",
    }


@pytest.fixture(scope="session")
def airflow_db(airflow_env):
    """A migrated metadata DB holding DAGs of 10, 100 and 1,000 tasks, each with a running run."""
    helpers.run_airflow(["db", "migrate"], env=os.environ.copy(), timeout=240, check=True)
    helpers.sync_bundles()
    dags = {}
    for n in (10, 100, 1000):
        dag_id = f"shape_{n}"
        helpers.write_dag_file(airflow_env["dags"], dag_id, n)
        dags[n] = dag_id
    helpers.write_dag_file(airflow_env["dags"], "tiny", 3, width=3)
    helpers.parse_and_sync(airflow_env["dags"])
    for dag_id in list(dags.values()) + ["tiny"]:
        helpers.create_running_run(dag_id)
    return {**airflow_env, "dags_by_size": dags}


@pytest.fixture
def db_copy(airflow_db, tmp_path):
    """A private copy of the session DB, and the environment for an Airflow subprocess using it."""
    dst = tmp_path / "airflow.db"
    helpers.copy_sqlite(airflow_db["db"], dst)
    env = os.environ.copy()
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{dst}"
    env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(tmp_path / "logs")
    return {"db": dst, "env": env, "dir": tmp_path}


@pytest.fixture(autouse=True)
def unfrozen_heap_after():
    """A bag's reclaim freezes the process's survivors (bytecache_airflow.freezing); the next test
    starts with nothing frozen, as a fresh process would."""
    yield
    gc.unfreeze()


@pytest.fixture
def no_automatic_gc():
    """Only the code under test may collect (the bag's reclaim, a reclaimer): an automatic
    collection would reset the count of evicted-but-uncollected bytes mid-test."""
    was_enabled = gc.isenabled()
    gc.disable()
    yield
    if was_enabled:
        gc.enable()
