"""Misses per scheduler loop: Airflow's LRU against the byte-bounded bag, in the real scheduler loop.

    python -m profiling.scheduler_misses [--dags 700] [--tasks 5] [--sweeps 3] [--budget-fraction 0.6]
    python -m profiling.scheduler_misses --only bytecache-tinylfu --budget-fraction 0.25,0.6,1.5 --trace-dir DIR

Workload (``profiling.workload``): N small DAGs (default 700 of 5 tasks -- more than the 512
entries of Airflow's LRU), one running run each, ``default_pool`` at 0 slots so nothing executes
and every run stays active: the scheduler sweeps them round-robin,
``[scheduler] max_dagruns_per_loop_to_schedule`` runs per loop.

Each configuration runs in its own subprocess with its own environment (nothing in this
process's environment changes): a real ``SchedulerJobRunner`` (built through the plugin hook)
for ``--sweeps`` sweeps. Over the last sweep (steady state) it reports misses per scheduler loop,
the hit ratio, entries held, the bytes the bag accounts for (``snapshot().cached_bytes``) and
the deep walk of the DAGs it holds. It creates and deletes a temporary AIRFLOW_HOME (SQLite).

``--budget-fraction`` takes a list: each bytecache configuration but ``-fits`` runs once per
fraction. ``--trace-dir`` records each bytecache run's access trace there (with the bag's
working-set gauge at the end of every loop, ``bytecache_airflow.trace``) and reports the gauge's
error against the truth computed from the trace over the last sweep
(``profiling.working_set_accuracy``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from profiling.scratch import scratch_dir
from profiling.units import MiB
from profiling.workload import WorkloadSpec, airflow_env, plan_dags, write_dags

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("airflow-lru", "bytecache-tinylfu", "bytecache-lru", "bytecache-tinylfu-fits")


def config_settings(label: str, budget: int, working_set: int) -> dict[str, str]:
    if label == "airflow-lru":
        return {"AIRFLOW__SCHEDULER__DAG_CACHE_POLICY": "airflow"}
    policy = label.split("-")[1]
    max_bytes = int(1.5 * working_set) if label.endswith("-fits") else budget
    # an explicit unit: a small bare number is refused (the 16 MiB floor for bare budgets)
    return {"AIRFLOW__SCHEDULER__DAG_CACHE_MAX_BYTES": f"{max_bytes}B", "AIRFLOW__SCHEDULER__DAG_CACHE_POLICY": policy}


# -- inside an Airflow environment (the worker subprocess) ----------------------------------------
def mean_weight(sample: int = 30) -> dict:
    """The mean deep size of one DAG and deep/JSON over a sample, for sizing the budget."""
    from sqlalchemy import Text, cast, func, select

    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session

    from profiling.cache_contents import deep_walk

    with create_session() as session:
        rows = session.execute(select(SerializedDagModel, func.length(cast(SerializedDagModel._data, Text))).limit(sample)).all()
        deep = sum(deep_walk([serdag.dag])["walk_bytes"] for serdag, _ in rows)
        json_total = sum(length for _, length in rows)
    return {"per_dag": deep / len(rows), "ratio": deep / json_total}


def measure(loops: int, per_sweep: int, lru_entries: int | None, trace_path: str | None = None) -> dict:
    """Run the scheduler loop ``loops`` times; the last ``per_sweep`` loops are the steady state.
    With ``trace_path``, record the access trace there and check the working-set gauge against it."""
    import airflow.jobs.scheduler_job_runner as sjr
    from airflow import __version__ as airflow_version
    from airflow.jobs.job import Job, run_job

    from profiling.bootstrap import TraceWriter, instrument_bag
    from profiling.cache_contents import airflow_cached_dags, cached_dags, deep_walk

    if lru_entries is not None:
        if not hasattr(sjr, "SCHEDULER_DAG_CACHE_SIZE"):
            raise SystemExit(f"--lru-entries {lru_entries}: Airflow {airflow_version}'s scheduler has no SCHEDULER_DAG_CACHE_SIZE "
                             "(3.3+); its cache is an unbounded dict")
        sjr.SCHEDULER_DAG_CACHE_SIZE = lru_entries
    runner = sjr.SchedulerJobRunner(job=Job(), num_runs=loops)
    bag = runner.scheduler_dag_bag
    counts = {"lookups": 0, "hits": 0, "misses": 0, "loops": 0}
    trace = TraceWriter(trace_path, None, 3.8) if trace_path else None
    instrument_bag(bag, counts, trace)
    per_loop: list[tuple[int, int]] = []
    orig_do = runner._do_scheduling

    def do_scheduling(session):
        before = dict(counts)
        counts["loops"] += 1
        try:
            return orig_do(session)
        finally:
            per_loop.append((counts["hits"] - before["hits"], counts["misses"] - before["misses"]))
            if trace is not None:
                trace.mark_loop(bag, counts["loops"])

    runner._do_scheduling = do_scheduling
    started = time.perf_counter()
    run_job(job=runner.job, execute_callable=runner._execute)
    elapsed = time.perf_counter() - started
    working_set = None
    if trace is not None:
        from bytecache_airflow.trace import read_trace

        from profiling.working_set_accuracy import accuracy

        trace.close()
        working_set = accuracy(read_trace(trace_path), skip_loops=len(per_loop) - per_sweep, sweep_loops=per_sweep)

    steady = per_loop[-per_sweep:]
    hits, misses = sum(h for h, _ in steady), sum(m for _, m in steady)
    snapshot = getattr(bag, "snapshot", None)
    if snapshot is not None:
        snap = snapshot()
        dags, accounted = cached_dags(bag), snap.cached_bytes
        cache = f"bytecache {bag.policy}, budget {snap.max_bytes / MiB:.1f} MiB"
    else:
        dags, accounted = airflow_cached_dags(bag), None
        maxsize = getattr(bag._dags, "maxsize", None)  # before 3.3: a dict of DAGs, never evicted
        cache = f"Airflow {airflow_version} LRU, {maxsize} entries" if maxsize else f"Airflow {airflow_version} unbounded dict"
    return {
        "cache": cache,
        "loops": len(per_loop),
        "steady_loops": len(steady),
        "misses_per_loop": misses / max(len(steady), 1),
        "hit_ratio": hits / max(hits + misses, 1),
        "entries": len(dags),
        "accounted": accounted,
        "deep": deep_walk(dags)["walk_bytes"],
        "seconds": elapsed,
        "lookups": sum(h + m for h, m in per_loop),
        "gauge_accuracy": working_set,
    }


def worker(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("size", "measure"))
    ap.add_argument("--loops", type=int)
    ap.add_argument("--per-sweep", type=int)
    ap.add_argument("--lru-entries", type=int)
    ap.add_argument("--trace")
    args = ap.parse_args(argv)
    if args.what == "size":
        from airflow import __version__ as airflow_version

        result = {**mean_weight(), "airflow": airflow_version}
    else:
        result = measure(args.loops, args.per_sweep, args.lru_entries, args.trace)
    print("RESULT " + json.dumps(result), flush=True)


# -- the driver ---------------------------------------------------------------------------------------
def run_worker(args: list[str], env: dict, log: Path) -> dict:
    with open(log, "a") as f:
        r = subprocess.run([sys.executable, "-m", "profiling.scheduler_misses", "--worker", *args], env=env, cwd=str(ROOT),
                           stdout=subprocess.PIPE, stderr=f, text=True, timeout=3600)
    line = next((x for x in reversed(r.stdout.splitlines()) if x.startswith("RESULT ")), None)
    if r.returncode or line is None:
        raise RuntimeError(f"worker {args[0]} exited {r.returncode}; see {log}")
    return json.loads(line[len("RESULT "):])


def run(args) -> list[dict]:
    with scratch_dir("bytecache-misses-", args.keep, "AIRFLOW_HOME") as home:
        log = home / "worker.log"
        t0 = time.perf_counter()
        spec = WorkloadSpec(n_dags=args.dags, size_mix={args.tasks: 1.0}, seed=args.seed)
        (home / "plugins").mkdir()
        write_dags(home / "dags", spec)
        env = airflow_env(home, AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="0.01",
                          AIRFLOW__SCHEDULER__MAX_DAGRUNS_PER_LOOP_TO_SCHEDULE=str(args.per_loop))
        with open(log, "a") as f:
            subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, stdout=f, stderr=subprocess.STDOUT, check=True, timeout=900)
            subprocess.run([sys.executable, "-m", "profiling.workload", "prepare", "--dags-folder", str(home / "dags"), "--spec", spec.to_json()],
                           env=env, stdout=f, stderr=subprocess.STDOUT, check=True, timeout=1800, cwd=str(ROOT))
        size = run_worker(["size"], env, log)
        working_set = int(size["per_dag"] * args.dags)
        print(f"workload: {args.dags} DAGs x {args.tasks} tasks ({', '.join(sorted({p.shape for p in plan_dags(spec)}))}), one running run each, "
              f"default_pool 0 slots; {args.per_loop} runs examined per loop; deep size per DAG {size['per_dag'] / 1024:.1f} KiB "
              f"(deep/JSON {size['ratio']:.2f}); working set {working_set / MiB:.1f} MiB; set up in {time.perf_counter() - t0:.0f}s", flush=True)
        per_sweep = -(-args.dags // args.per_loop)
        results = []
        for label, fraction in runs(args.only or CONFIGS, args.budget_fraction):
            budget = int(working_set * fraction)
            cfg_env = {**env, **config_settings(label, budget, working_set)}
            extra = ["--lru-entries", str(args.lru_entries)] if args.lru_entries and label == "airflow-lru" else []
            name = label if len(args.budget_fraction) == 1 or label in ("airflow-lru", "bytecache-tinylfu-fits") else f"{label}@{fraction:.0%}"
            if args.trace_dir and label != "airflow-lru":
                args.trace_dir.mkdir(parents=True, exist_ok=True)
                extra += ["--trace", str((args.trace_dir / f"{name}.trace.gz").resolve())]
            r = run_worker(["measure", "--loops", str(per_sweep * args.sweeps), "--per-sweep", str(per_sweep), *extra], cfg_env, log)
            r.update(label=name, budget=budget, working_set=working_set, per_loop=args.per_loop, airflow=size["airflow"])
            results.append(r)
            print(f"  {name}: {r['loops']} loops, {r['lookups']} lookups in {r['seconds']:.0f}s", flush=True)
        return results


def runs(configs, fractions: list[float]) -> list[tuple[str, float]]:
    """(configuration, budget fraction) pairs: the bytecache budgets once per fraction; the others once."""
    return [(label, f) for label in configs for f in (fractions if label in ("bytecache-tinylfu", "bytecache-lru") else fractions[:1])]


def table(results: list[dict], sweeps: int) -> str:
    per_sweep = results[0]["steady_loops"] if results else 0
    header = f"| {'cache':40} | misses/loop | hit ratio | entries | bytes accounted | bytes held (deep walk) |"
    airflow = f"Airflow {results[0]['airflow']}; " if results else ""
    lines = [f"{airflow}steady state = the last sweep ({per_sweep} loops) of {sweeps}", header,
             "|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|"]
    for r in results:
        accounted = "n/a" if r["accounted"] is None else f"{r['accounted'] / MiB:.1f} MiB"
        lines.append(f"| {r['cache']:40} | {r['misses_per_loop']:11.1f} | {r['hit_ratio']:9.2f} | {r['entries']:7d} "
                     f"| {accounted:>15} | {r['deep'] / MiB:18.1f} MiB |")
    gauged = [r for r in results if r.get("gauge_accuracy")]
    if gauged:
        from profiling.working_set_accuracy import format_table

        lines += ["", "working-set gauge against the truth from the trace, over the last sweep:", "",
                  format_table([(r["label"], {**r["gauge_accuracy"], "budget": r["budget"]}) for r in gauged])]
    return "\n".join(lines)


def _fractions(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget-fraction: {text!r} is not a comma-separated list of numbers") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"--budget-fraction: {text!r}: every fraction must be > 0")
    return values


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m profiling.scheduler_misses", description=__doc__.splitlines()[0])
    ap.add_argument("--dags", type=int, default=700)
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-loop", type=int, default=20, help="[scheduler] max_dagruns_per_loop_to_schedule")
    ap.add_argument("--sweeps", type=int, default=3)
    ap.add_argument("--budget-fraction", type=_fractions, default=[0.6],
                    help="budget / working set; a comma-separated list runs each bytecache configuration once per fraction")
    ap.add_argument("--trace-dir", type=Path, help="record each bytecache run's access trace here and check its working-set gauge")
    ap.add_argument("--lru-entries", type=int, help="entries of Airflow's LRU (its SCHEDULER_DAG_CACHE_SIZE; default 512)")
    ap.add_argument("--only", nargs="+", choices=CONFIGS, metavar="CONFIG", help=f"run only these of {', '.join(CONFIGS)}")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary AIRFLOW_HOME")
    args = ap.parse_args(argv)
    results = run(args)
    print()
    print(table(results, args.sweeps))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
