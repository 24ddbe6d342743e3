"""Helpers for the Airflow integration tests: DAG files, parsing into the DB, runs, subprocesses."""

from __future__ import annotations

import gc

import socket
import sqlite3
import subprocess
import sys
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

AIRFLOW_BIN = str(Path(sys.executable).with_name("airflow"))
BUNDLE = "dags-folder"

DAG_TEMPLATE = '''\
from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG(
    dag_id={dag_id!r},
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    doc_md={doc!r},
    tags=["bytecache-test"],
):
    tasks = [EmptyOperator(task_id=f"task_{{i:05d}}") for i in range({n})]
    for i in range({width}, {n}):
        tasks[i - {width}] >> tasks[i]
'''


def write_dag_file(dags_dir: Path, dag_id: str, n_tasks: int, *, width: int = 10, doc: str = "v1") -> Path:
    path = Path(dags_dir) / f"{dag_id}.py"
    path.write_text(DAG_TEMPLATE.format(dag_id=dag_id, n=n_tasks, width=min(width, n_tasks), doc=doc))
    return path


def sync_bundles() -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)


def parse_and_sync(path: Path) -> list[str]:
    """Parse a DAG file (or folder) and write the serialized DAGs as the dag processor would."""
    from airflow.configuration import conf

    from profiling.workload import parse_into_db

    return parse_into_db(path, Path(conf.get("core", "dags_folder")), BUNDLE)


def latest_version_id(dag_id: str):
    from airflow.models.dag_version import DagVersion
    from airflow.utils.session import create_session

    with create_session() as session:
        return DagVersion.get_latest_version(dag_id, session=session).id


def serialized_row(version_id):
    """(dag_hash, length of the stored JSON) straight from the table."""
    from sqlalchemy import text

    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            text("SELECT dag_hash, length(data), data_compressed FROM serialized_dag WHERE dag_version_id = :v"),
            {"v": str(version_id).replace("-", "")},
        ).first()
    return row


def create_running_run(dag_id: str, run_id: str | None = None) -> str:
    from airflow.models.dag import DagModel
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    from profiling.workload import start_running_run

    now = datetime.now(timezone.utc)
    run_id = run_id or f"bytecache_{dag_id}_{now.timestamp():.6f}"
    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=False))
        start_running_run(SerializedDagModel.get(dag_id, session=session).dag, run_id, session, now=now)
    return run_id


def get_run(session, dag_id: str, run_id: str | None = None):
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    query = select(DagRun).where(DagRun.dag_id == dag_id)
    if run_id:
        query = query.where(DagRun.run_id == run_id)
    return session.scalars(query.order_by(DagRun.id.desc()).limit(1)).one()


def copy_sqlite(src: Path, dst: Path) -> None:
    with sqlite3.connect(str(src)) as source, sqlite3.connect(str(dst)) as target:
        source.backup(target)


def run_airflow(args: list[str], *, env: dict, timeout: float = 180, check: bool = False, cwd=None):
    proc = subprocess.run(
        [AIRFLOW_BIN, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"airflow {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StatsdListener:
    """A real UDP statsd endpoint on 127.0.0.1 that collects every line it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65535)
            except OSError:
                continue
            with self._cond:
                self.lines.extend(data.decode().splitlines())
                self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0):
        """The first received line satisfying ``predicate`` (waits on arrivals, not on a clock)."""
        with self._cond:
            found = self._cond.wait_for(lambda: next((l for l in self.lines if predicate(l)), None), timeout)
        return found

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        self.sock.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a server the test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- where Airflow keeps its plugins and its compression flag differs by release (test-side only)
def loaded_plugins() -> tuple[list, dict]:
    """(plugins, import errors) as Airflow loads them."""
    from airflow import plugins_manager

    if hasattr(plugins_manager, "_get_plugins"):  # 3.2+
        return plugins_manager._get_plugins()
    plugins_manager.ensure_plugins_loaded()  # 3.1: module globals
    return plugins_manager.plugins, plugins_manager.import_errors


def forget_fastapi_plugins() -> None:
    """Make the next ``create_app`` read the plugins' FastAPI parts (root middlewares) again."""
    from airflow import plugins_manager

    if hasattr(plugins_manager, "get_fastapi_plugins"):  # 3.2+: cached
        plugins_manager.get_fastapi_plugins.cache_clear()
    else:  # 3.1: module globals, filled once
        plugins_manager.fastapi_apps = plugins_manager.fastapi_root_middlewares = None


def compress_serialized_dags(monkeypatch, on: bool = True) -> None:
    """Set ``[core] compress_serialized_dags`` as ``airflow.models.serialized_dag`` sees it."""
    from airflow.models import serialized_dag

    # 3.2+ keeps a private copy; 3.1 imports airflow.settings' flag under its own name
    flag = next(n for n in ("_COMPRESS_SERIALIZED_DAGS", "COMPRESS_SERIALIZED_DAGS") if hasattr(serialized_dag, n))
    monkeypatch.setattr(serialized_dag, flag, on)


@contextmanager
def statsd_to_listener(monkeypatch):
    """Airflow's stats client pointed at a fresh :class:`StatsdListener` for the block; off again after."""
    from bytecache_airflow.versions import current

    listener = StatsdListener()
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(listener.port))
    current().restart_stats()
    try:
        yield listener
    finally:
        monkeypatch.undo()
        current().restart_stats()  # [metrics] statsd_on is off again: no stats backend
        listener.close()


def frozen(obj) -> bool:
    """In the permanent generation (``gc.freeze()``): tracked by the collector, yet in none of its generations."""
    return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())
