"""The scheduler forks (LocalExecutor) while bytecache's maintenance thread runs: what a real
``airflow scheduler`` does, and what Python 3.12+ says about it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import airflow_helpers as helpers
import pytest

PROBE_DIR = Path(__file__).resolve().parents[2] / "profiling" / "forkprobe"
MAINTENANCE_THREAD = "bytecache-dagbag-maintenance"
FORK_WARNING = "is multi-threaded, use of fork() may lead to deadlocks in the child"


def _workers_of(pid: int) -> list[int]:
    """LocalExecutor's worker processes among ``pid``'s children (named by setproctitle)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = []
    for child in map(int, children):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"LocalExecutor" in cmdline:
            workers.append(child)
    return workers


def _forks(probe: Path, pid: int) -> list[dict]:
    if not probe.exists():
        return []
    return [r for r in map(json.loads, probe.read_text().splitlines()) if r["pid"] == pid]


def _wait_until(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)  # polls another process's state; nothing is timed by it
    return predicate()


def run_scheduler_through_a_worker_refork(db_copy, *, bytecache: bool) -> tuple[str, list[dict], dict]:
    """A real ``airflow scheduler`` (LocalExecutor, 2 workers forked at start) runs until its
    bag has served lookups; then its workers are killed (as the OOM killer would) and the pool
    opened, so queued tasks make LocalExecutor fork new workers while the scheduler runs.
    Returns the scheduler's output, the probe's record of each of its forks, and which forks
    came after the kill."""
    env = db_copy["env"]
    dags = db_copy["dir"] / "bash_dags"
    probe = db_copy["dir"] / "forks.jsonl"
    listener = helpers.StatsdListener()
    env.update({
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
        "PYTHONWARNINGS": "always::DeprecationWarning",
        "PYTHONPATH": os.pathsep.join([str(PROBE_DIR), env.get("PYTHONPATH", "")]),
        "BYTECACHE_FORK_PROBE": str(probe),
    })
    if bytecache:
        env["AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES"] = "96MiB"
    else:
        env.pop("AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES", None)
    workload = [sys.executable, "-m", "profiling.workload"]
    repo = str(PROBE_DIR.parents[1])
    spec = ["--dags", "2", "--size-mix", "10:1", "--active-runs", "2"]
    for command in ("write", "prepare"):  # BashOperator DAGs, runs waiting on a 0-slot pool
        subprocess.run([*workload, command, "--dags-folder", str(dags), *spec], env=env, cwd=repo,
                       check=True, capture_output=True, timeout=300)
    log = db_copy["dir"] / "scheduler.log"
    with open(log, "w") as out:  # a file, not a pipe: killed workers' replacements hold it open
        scheduler = subprocess.Popen([helpers.AIRFLOW_BIN, "scheduler", "--skip-serve-logs"], env=env,
                                     cwd=db_copy["dir"], stdout=out, stderr=subprocess.STDOUT)
    running = lambda: scheduler.poll() is None  # noqa: E731
    try:
        loops = lambda: sum(l.startswith("airflow.scheduler.scheduler_loop_duration:") for l in listener.lines)  # noqa: E731
        looked_up = lambda: loops() >= 3 and any(".dag_bag.cache_" in l for l in listener.lines)  # noqa: E731
        assert _wait_until(lambda: looked_up() or not running(), 240) and running(), log.read_text()[-5000:]
        workers = _wait_until(lambda: _workers_of(scheduler.pid), 30)
        assert len(workers) == 2, workers
        forks_before_kill = len(_forks(probe, scheduler.pid))
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
        with sqlite3.connect(str(db_copy["db"]), timeout=60) as conn:
            conn.execute("UPDATE slot_pool SET slots = 2 WHERE pool = 'default_pool'")
        refork = _wait_until(lambda: len(_forks(probe, scheduler.pid)) > forks_before_kill or not running(), 240)
        assert refork and running(), log.read_text()[-5000:]
        _wait_until(lambda: len(_workers_of(scheduler.pid)) == 2, 30)
        # the scheduler's threads once the new workers run (the maintenance thread restarts at once)
        threads_after_refork = len(os.listdir(f"/proc/{scheduler.pid}/task"))
    finally:
        workers = _workers_of(scheduler.pid) if running() else []
        scheduler.send_signal(signal.SIGTERM)
        try:
            scheduler.wait(timeout=120)
        except subprocess.TimeoutExpired:
            scheduler.kill()
            scheduler.wait()
        for worker in workers:  # ended by the scheduler's shutdown; never left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
        listener.close()
    output = log.read_text()
    forks = _forks(probe, scheduler.pid)
    return output, forks, {"before_kill": forks[:forks_before_kill], "after_kill": forks[forks_before_kill:],
                           "threads_after_refork": threads_after_refork}



@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python < 3.12 does not warn when a multi-threaded process "
                    "forks; the thread being gone at a real os.fork() is checked on every Python by "
                    "test_a_fork_stops_the_maintenance_thread_and_the_parent_starts_it_again")
@pytest.mark.parametrize("bytecache", [True, False], ids=["bytecache", "airflow_cache"])
def test_a_scheduler_refork_prints_no_fork_warning(db_copy, bytecache):
    """LocalExecutor forks its workers at start (before any lookup) and forks new ones when
    workers die; by then bytecache's maintenance thread runs. Python 3.12 warns "This process
    ... is multi-threaded, use of fork() may lead to deadlocks in the child" when the process
    has a second OS thread at a fork. With Airflow's own cache (the control) there is none."""
    output, forks, split = run_scheduler_through_a_worker_refork(db_copy, bytecache=bytecache)
    refork = split["after_kill"]
    assert refork and all("_check_workers" in f["caller"] for f in refork), forks
    for fork in forks:
        assert fork["python_threads"] == ["MainThread"] and len(fork["os_threads"]) == 1, fork
    assert FORK_WARNING not in output, [line for line in output.splitlines() if FORK_WARNING in line]
    # not vacuous: with bytecache the maintenance thread ran between the forks
    assert split["threads_after_refork"] == (2 if bytecache else 1), split


def _run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    env = dict(env, PYTHONPATH=os.pathsep.join([str(PROBE_DIR), os.path.dirname(__file__), *sys.path]))
    return subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-c", code], env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_fork_stops_the_maintenance_thread_and_the_parent_starts_it_again(airflow_db, tmp_path):
    """A real ``os.fork()`` in a process whose bag has started its maintenance thread: at the
    fork (seen by the probe, whose hook runs after every other) the thread is gone, Python's and
    the OS's alike; after it the parent has a new one running, the child none."""
    probe = tmp_path / "forks.jsonl"
    code = f"""
import os, threading
from airflow.utils.session import create_session
import airflow_helpers as helpers
from bytecache_airflow.dagbag import ByteBoundedDagBag, _Maintainer

def maintenance_threads():
    return [t for t in threading.enumerate() if t.name == {MAINTENANCE_THREAD!r}]

bag = ByteBoundedDagBag(False, max_bytes="64MiB", stats_prefix="test.dag_bag")
with create_session() as session:
    bag.get_dag_for_run(helpers.get_run(session, {airflow_db["dags_by_size"][10]!r}), session=session)
(before,) = maintenance_threads()
pid = os.fork()
if pid == 0:
    os._exit(3 if maintenance_threads() else 0)
assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "the child has a maintenance thread"
after = maintenance_threads()
assert len(after) == 1 and after[0] is not before and after[0].is_alive(), "not running again after the fork"
assert _Maintainer.fork_waits == 1 and _Maintainer.forks_with_thread == 0
print("fork waited", _Maintainer.last_fork_wait)
"""
    proc = _run_python(code, dict(os.environ, BYTECACHE_FORK_PROBE=str(probe)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (fork,) = [json.loads(line) for line in probe.read_text().splitlines()]
    assert MAINTENANCE_THREAD not in fork["python_threads"], fork
    assert len(fork["os_threads"]) == len(fork["python_threads"]), fork  # no OS thread still ending
    if sys.version_info >= (3, 12):  # Python counts OS threads to decide; one left, no warning
        assert (FORK_WARNING in proc.stderr) == (len(fork["os_threads"]) > 1), (fork, proc.stderr[-3000:])
