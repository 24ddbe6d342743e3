"""How well the bytes gauge bounds memory, per class of DAG, in the real scheduler.

    python -m profiling.weighing_accuracy [--scale 1] [--budget-fraction 0.8] [--sweeps 6] [--redeploy-fraction 0.5]

Workload (``profiling.workload.WEIGHING_CLASSES``): DAGs of 5, 50, 500, 2,000 and 5,000 tasks,
``BashOperator`` and ``PythonOperator``, and one string-heavy class (256 KiB of ``doc_md``, 200
params of 400 characters); one running run each, ``default_pool`` at 0 slots, so the scheduler
visits every run each sweep. Before the scheduler starts, ``--redeploy-fraction`` of each class's
DAGs are deployed again (a new DAG version): on its first visit the scheduler moves their runs to
it with ``DagRun.verify_integrity`` on the DAG its bag loaded, which grows that DAG by ~1 kB per
task (the model's ``expanded_tasks``), so the cache holds grown and fresh DAGs, as a scheduler
does. A real ``SchedulerJobRunner`` (Airflow 3.3.2, SQLite, this process)
runs with bytecache as its DAG bag (through the plugin hook), the budget a fraction of the
working set so that DAGs are evicted and reloaded (the calibrator samples used DAGs as they
leave). At the end, per class and overall, it compares the gauge (the sum of the weights of
the cached DAGs, ``bag.snapshot()``) with the deep size of the very DAGs cached, measured with
the stdlib walker and with pympler; and shows what one JSON-bytes ratio (the old model: the
same samples' bytes per JSON byte) would have charged. It creates and deletes its own
temporary AIRFLOW_HOME.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from profiling.units import MiB
from profiling.workload import (
    WEIGHING_CLASSES,
    DagClass,
    airflow_env,
    parse_into_db,
    prepare_folder,
    write_class_dags,
)

#: DAGs of each class at --scale 1 (~100 MiB of deserialized DAGs).
COUNTS = {"bash_5": 30, "python_50": 20, "bash_500": 6, "python_2000": 3, "bash_5000": 2, "python_20_docs": 8}


def counts_at(scale: float) -> dict[DagClass, int]:
    return {cls: max(1, round(COUNTS[cls.name] * scale)) for cls in WEIGHING_CLASSES}


def run_scheduler(loops: int, budget: int):
    """Run a real scheduler loop ``loops`` times with bytecache at ``budget`` bytes; its bag."""
    from airflow.jobs.job import Job, run_job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    os.environ["AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES"] = str(budget)
    runner = SchedulerJobRunner(job=Job(), num_runs=loops)
    run_job(job=runner.job, execute_callable=runner._execute)
    return runner.scheduler_dag_bag


def working_set_estimate() -> int:
    """Deep size (walker) of every latest DAG version, each freshly deserialized."""
    from bytecache.measure import walk_sizeof
    from sqlalchemy import select

    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session

    total = 0
    with create_session() as session:
        for serdag in session.scalars(select(SerializedDagModel)):
            total += walk_sizeof(serdag.dag)
            session.expunge(serdag)
    return total


def measure(bag, classes: dict[str, DagClass]) -> tuple[list[dict], dict]:
    """Per class and overall: entries, gauge, the deep size of the cached DAGs by the walker and by
    pympler (each object once over the class's DAGs, as ``profiling.cache_contents`` measures the
    whole cache; and pympler's sum over the DAGs one at a time), one-ratio gauge."""
    from uuid import UUID

    from bytecache.measure import deep_sizeof

    from profiling.cache_contents import deep_walk, pympler_size

    snap = bag.snapshot()
    one_ratio = snap.weighing.get("ratio")
    rows: dict[str, dict] = defaultdict(lambda: {"entries": 0, "json": 0, "gauge": 0, "dags": []})
    for entry in snap.entries:
        value = bag.cache.peek(UUID(entry.dag_version_id))
        if value is None:
            continue
        name = classes[entry.dag_id].name
        for key in (name, "all"):
            row = rows[key]
            row["entries"] += 1
            row["json"] += entry.json_bytes
            row["gauge"] += entry.weight
            row["dags"].append(value.dag)
    order = [c.name for c in WEIGHING_CLASSES if c.name in rows] + ["all"]
    # every walk before pympler: pympler materializes the __dict__ of each instance it visits
    for name in order:
        rows[name]["walk"] = deep_walk(rows[name]["dags"])["walk_bytes"]
    for name in order:
        rows[name]["pympler"] = pympler_size(rows[name]["dags"])
        rows[name]["pympler_each"] = sum(deep_sizeof(dag, use_pympler=True) for dag in rows[name]["dags"])
    table = []
    for name in order:
        row = rows[name]
        del row["dags"]
        row["class"] = name
        row["one_ratio"] = row["json"] * one_ratio if one_ratio else None
        table.append(row)
    return table, snap.to_dict()


def pct(gauge: float | None, deep: float) -> str:
    return "n/a" if gauge is None or not deep else f"{(gauge / deep - 1) * 100:+.1f}%"


def print_table(table: list[dict]) -> None:
    print("| class | cached | JSON | gauge | walker | pympler | gauge vs walker | gauge vs pympler | vs pympler, DAG by DAG | one ratio (old) vs walker | vs pympler |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(
            f"| {r['class']} | {r['entries']} | {r['json'] / MiB:.1f} MiB | {r['gauge'] / MiB:.1f} MiB | {r['walk'] / MiB:.1f} MiB "
            f"| {r['pympler'] / MiB:.1f} MiB | {pct(r['gauge'], r['walk'])} | {pct(r['gauge'], r['pympler'])} "
            f"| {pct(r['gauge'], r['pympler_each'])} | {pct(r['one_ratio'], r['walk'])} | {pct(r['one_ratio'], r['pympler'])} |"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m profiling.weighing_accuracy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="DAGs per class relative to the default counts")
    ap.add_argument("--budget-fraction", type=float, default=0.8, help="budget / working set (walker, fresh DAGs)")
    ap.add_argument("--sweeps", type=int, default=6, help="scheduler sweeps over all runs")
    ap.add_argument("--per-loop", type=int, default=20, help="[scheduler] max_dagruns_per_loop_to_schedule")
    ap.add_argument("--redeploy-fraction", type=float, default=0.5,
                    help="of each class's DAGs, deployed again (a new version) before the scheduler starts")
    ap.add_argument("--keep", action="store_true", help="keep the temporary AIRFLOW_HOME")
    args = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="bytecache-weighing-"))
    (home / "dags").mkdir()
    (home / "plugins").mkdir()
    env = airflow_env(
        home,
        AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.01",
        AIRFLOW__SCHEDULER__MAX_DAGRUNS_PER_LOOP_TO_SCHEDULE=str(args.per_loop),
    )
    os.environ.clear()
    os.environ.update(env)
    try:
        t0 = time.perf_counter()
        classes = write_class_dags(home / "dags", counts_at(args.scale))
        airflow_bin = str(Path(sys.executable).with_name("airflow"))
        subprocess.run([airflow_bin, "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
        prepared = prepare_folder(home / "dags", sorted(classes))
        redeployed = {cls: round(n * args.redeploy_fraction) for cls, n in counts_at(args.scale).items()}
        if any(redeployed.values()):
            write_class_dags(home / "dags", redeployed, version=2)
            parse_into_db(home / "dags", home / "dags")
        working_set = working_set_estimate()
        budget = int(working_set * args.budget_fraction)
        per_sweep = -(-len(classes) // args.per_loop)
        print(
            f"workload: {len(classes)} DAGs ({', '.join(f'{n} x {c.name}' for c, n in counts_at(args.scale).items())}), "
            f"{prepared['runs']} running runs, {sum(redeployed.values())} of them to move to a new version; working set {working_set / MiB:.1f} MiB (walker, fresh); "
            f"budget {budget / MiB:.1f} MiB ({args.budget_fraction:.0%}); set up in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        t1 = time.perf_counter()
        bag = run_scheduler(per_sweep * args.sweeps, budget)
        bag.maintain(force=True)  # take the samples still queued
        print(f"scheduler: {per_sweep * args.sweeps} loops in {time.perf_counter() - t1:.0f} s", flush=True)
        table, snap = measure(bag, classes)
        weighing = snap["weighing"]
        print(
            f"weighing model after {weighing['samples']} samples (of {weighing['seen']} candidates): "
            + ", ".join(f"{k} {v:.4g}" for k, v in sorted(weighing["coefficients"].items()))
            + f"; one ratio on the same samples: {weighing['ratio']:.3f} bytes per JSON byte"
        )
        print(
            f"cache: {len(snap['entries'])} entries, {snap['cached_bytes'] / MiB:.1f} MiB of {budget / MiB:.1f} MiB; "
            f"hits {snap['hits']}, misses {snap['misses']}, evictions {snap['evictions']}, rejections {snap['rejections']}"
        )
        print()
        print_table(table)
        worst = max(abs(r["gauge"] / r[k] - 1) for r in table for k in ("walk", "pympler") if r[k])
        print(f"\nworst per-class error of the gauge: {worst * 100:.1f}% ({'within' if worst <= 0.10 else 'OUTSIDE'} +-10%)")
        return 0 if worst <= 0.10 else 1
    finally:
        if args.keep:
            print(f"AIRFLOW_HOME kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
