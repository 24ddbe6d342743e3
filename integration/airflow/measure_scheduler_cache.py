"""Airflow's 512-entry LRU against the byte-bounded bag, in the real scheduler loop.

Workload: N small DAGs (default 700 x 5 BashOperator tasks, more active versions than 512), one
running run each, ``default_pool`` at 0 slots so nothing executes and every run stays active:
the scheduler sweeps them round-robin, ``[scheduler] max_dagruns_per_loop_to_schedule`` per loop.

For each configuration it runs a real ``SchedulerJobRunner`` (through the plugin hook) in this
process for a few sweeps and reports, over the last sweep (steady state): misses per scheduler
loop, the hit ratio, entries held, the bytes the bag accounts for and the deep-measured bytes of
the DAGs it holds. Usage::

    python integration/airflow/measure_scheduler_cache.py [--dags 700] [--tasks 5] [--sweeps 3]
        [--budget-fraction 0.6]

It creates and deletes its own temporary AIRFLOW_HOME (SQLite). Takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The embedded-Airflow set-up is the profiling workload's; this script runs from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from profiling.bootstrap import count_hits_and_misses  # noqa: E402
from profiling.workload import airflow_env, parse_into_db, start_running_run  # noqa: E402

DAG_FILE = '''\
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

for i in range({n_dags}):
    with DAG(dag_id=f"load_{{i:04d}}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        # not EmptyOperator: the scheduler would finish those itself; these wait for a pool slot
        tasks = [BashOperator(task_id=f"t{{j}}", bash_command="true") for j in range({n_tasks})]
        for a, b in zip(tasks, tasks[1:]):
            a >> b
    globals()[dag.dag_id] = dag
'''


def setup_environment(home: Path, per_loop: int) -> None:
    (home / "dags").mkdir(parents=True)
    (home / "plugins").mkdir()
    env = airflow_env(
        home,
        AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.01",
        AIRFLOW__SCHEDULER__MAX_DAGRUNS_PER_LOOP_TO_SCHEDULE=str(per_loop),
    )
    os.environ.clear()
    os.environ.update(env)


def prepare(home: Path, n_dags: int, n_tasks: int) -> None:
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow_bin, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    (home / "dags" / "load.py").write_text(DAG_FILE.format(n_dags=n_dags, n_tasks=n_tasks))

    from datetime import datetime, timezone

    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.models.dag import DagModel
    from airflow.models.pool import Pool
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select, update

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    parse_into_db(home / "dags", home / "dags", "dags-folder")
    with create_session() as session:
        session.execute(update(DagModel).values(is_paused=False))
        Pool.create_or_update_pool("default_pool", slots=0, description="", include_deferred=False, session=session)
        now = datetime.now(timezone.utc)
        for serdag in session.scalars(select(SerializedDagModel)):
            start_running_run(serdag.dag, "measure", session, now=now)


def mean_weight(sample: int = 30) -> tuple[float, float]:
    """(mean deep bytes of one DAG, deep/JSON ratio) over a sample, for sizing the budget."""
    from bytecache.measure import deep_sizeof
    from sqlalchemy import Text, cast, func, select

    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session

    deep = json_total = 0
    with create_session() as session:
        rows = session.execute(
            select(SerializedDagModel, func.length(cast(SerializedDagModel._data, Text))).limit(sample)
        ).all()
        for serdag, length in rows:
            deep += deep_sizeof(serdag.dag)
            json_total += length
    return deep / len(rows), deep / json_total


def run_config(label: str, env: dict, loops: int, per_sweep: int) -> dict:
    from bytecache.measure import deep_sizeof

    from airflow import __version__ as airflow_version
    from airflow.jobs.job import Job, run_job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    from bytecache_airflow.dagbag import ByteBoundedDagBag

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        runner = SchedulerJobRunner(job=Job(), num_runs=loops)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    bag = runner.scheduler_dag_bag
    counts = {"hits": 0, "misses": 0}
    per_loop: list[tuple[int, int]] = []
    orig_do = runner._do_scheduling
    count_hits_and_misses(bag, counts)

    def do_scheduling(session):
        before = dict(counts)
        try:
            return orig_do(session)
        finally:
            per_loop.append((counts["hits"] - before["hits"], counts["misses"] - before["misses"]))

    runner._do_scheduling = do_scheduling
    started = time.perf_counter()
    run_job(job=runner.job, execute_callable=runner._execute)
    elapsed = time.perf_counter() - started

    steady = per_loop[-per_sweep:]
    hits = sum(h for h, _ in steady)
    misses = sum(m for _, m in steady)
    if isinstance(bag, ByteBoundedDagBag):
        entries = [bag.cache.get(k) for k in list(bag.cache)]
        accounted = bag.currsize
        policy = f"bytecache {bag.policy}, budget {bag.max_bytes / 2**20:.1f} MiB"
    else:
        entries = list(bag._dags.values())
        accounted = None
        maxsize = getattr(bag._dags, "maxsize", None)  # before 3.3: a dict of DAGs, never evicted
        policy = f"Airflow {airflow_version} LRU, {maxsize} entries" if maxsize else f"Airflow {airflow_version} unbounded dict"
    deep = sum(deep_sizeof(getattr(e, "dag", e)) for e in entries if e is not None)
    return {
        "label": label,
        "policy": policy,
        "loops": len(per_loop),
        "steady_loops": len(steady),
        "misses_per_loop": misses / max(len(steady), 1),
        "hit_ratio": hits / max(hits + misses, 1),
        "entries": len(entries),
        "accounted": accounted,
        "deep": deep,
        "seconds": elapsed,
        "lookups": sum(h + m for h, m in per_loop),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dags", type=int, default=700)
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--per-loop", type=int, default=20, help="[scheduler] max_dagruns_per_loop_to_schedule")
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--budget-fraction", type=float, default=0.6, help="budget / working set")
    parser.add_argument("--keep", action="store_true", help="keep the temporary AIRFLOW_HOME")
    parser.add_argument("--only", nargs="+", metavar="CONFIG", help="run only these configurations (by label)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bytecache-measure-"))
    setup_environment(home, args.per_loop)
    try:
        t0 = time.perf_counter()
        prepare(home, args.dags, args.tasks)
        per_dag, ratio = mean_weight()
        working_set = per_dag * args.dags
        budget = int(working_set * args.budget_fraction)
        print(
            f"workload: {args.dags} DAGs x {args.tasks} tasks, one running run each, default_pool 0 slots; "
            f"{args.per_loop} runs examined per loop; deep size per DAG {per_dag / 1024:.1f} KiB "
            f"(deep/JSON {ratio:.2f}); working set {working_set / 2**20:.1f} MiB; set up in {time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        per_sweep = -(-args.dags // args.per_loop)
        loops = per_sweep * args.sweeps
        configs = [
            ("airflow", {"AIRFLOW__SCHEDULER__DAG_CACHE_POLICY": "airflow"}),  # the stock cache
            ("bytecache-tinylfu", {"AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES": f"{budget}B", "AIRFLOW__SCHEDULER__DAG_CACHE_POLICY": "tinylfu"}),
            ("bytecache-lru", {"AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES": f"{budget}B", "AIRFLOW__SCHEDULER__DAG_CACHE_POLICY": "lru"}),
            ("bytecache-tinylfu-fits", {"AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES": f"{int(working_set * 1.5)}B", "AIRFLOW__SCHEDULER__DAG_CACHE_POLICY": "tinylfu"}),
        ]
        if args.only:
            configs = [c for c in configs if c[0] in args.only]
        results = []
        for label, env in configs:
            results.append(run_config(label, env, loops, per_sweep))
            r = results[-1]
            print(f"  {label}: {r['loops']} loops, {r['lookups']} lookups in {r['seconds']:.0f}s", flush=True)

        print()
        from airflow import __version__ as airflow_version

        print(f"Airflow {airflow_version}; steady state = the last sweep ({per_sweep} loops) of {args.sweeps}")
        header = f"| {'cache':40} | misses/loop | hit ratio | entries | bytes accounted | bytes held (deep) |"
        print(header)
        print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
        for r in results:
            accounted = "n/a" if r["accounted"] is None else f"{r['accounted'] / 2**20:.1f} MiB"
            print(
                f"| {r['policy']:40} | {r['misses_per_loop']:11.1f} | {r['hit_ratio']:9.2f} | {r['entries']:7d} "
                f"| {accounted:>15} | {r['deep'] / 2**20:15.1f} MiB |"
            )
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
