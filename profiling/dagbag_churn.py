"""In-process DAG-bag churn: thousands of DAG versions through ``get_dag_for_run`` in a minute.

    python profiling/dagbag_churn.py                       # ~2,000 versions per variant
    python profiling/dagbag_churn.py --small --out DIR     # the test's instance (~1-2 min)

No scheduler: one real SQLite metadata DB (``airflow db migrate``), the seeded workload of
``profiling.workload`` (DAG files parsed once, one running run per DAG), then, for each variant
in a fresh subprocess:

* ``dbdagbag``: Airflow's plain ``DBDagBag`` (an unbounded dict);
* ``lru512``: Airflow's ``CachedDBDagBag(cache_size=512, cache_ttl=0)``, the stock scheduler's;
* ``bytecache``: ``bytecache_airflow.ByteBoundedDagBag`` with a byte budget.

Each step writes a new version of one DAG (its serialized data with a new ``doc_md``, through
``SerializedDagModel.write_dag``, then moves the run's task instances to it as the scheduler does,
so the next change makes another version) and then looks up the next ``--lookups`` running runs
round-robin through ``bag.get_dag_for_run`` -- the scheduler's sweep. Runs resolve to the latest
version (DAGs-folder bundle), so each superseded version is never read again.

It runs under ``memray.Tracker`` with ``trace_python_allocators`` (every object allocation, so the
figures are object-exact; aggregated file format), or ``tracemalloc`` with ``--tracker
tracemalloc``, and reports:

* retained heap over time (memray's heap snapshots / tracemalloc's traced memory, and RSS), per
  variant, against versions created -- ``churn.csv``, ``churn.png``;
* at the end, after ``gc.unfreeze(); gc.collect()``: memory still allocated under the bag's load path
  (``_get_dag``/``_read_dag`` in a ``dagbag.py``), i.e. the cached DAGs, against our bytes gauge
  (``currsize``): the accounting error. ``summary.md``/``churn.json`` hold the table.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

from profiling.bootstrap import count_hits_and_misses
from profiling.memray_files import under_load_path
from profiling.soak.analysis import accounting_error
from profiling.units import MiB, mib
from profiling.workload import WorkloadSpec, airflow_env, parse_size_mix, write_dags

VARIANTS = ("dbdagbag", "lru512", "bytecache")
#: Sizes that deserialize fast enough for thousands of versions a minute on a 2-core box.
CHURN_SIZE_MIX = {10: 40, 50: 30, 200: 20, 500: 10}


def make_bag(variant: str, budget: int):
    if variant == "dbdagbag":
        from airflow.models.dagbag import DBDagBag

        return DBDagBag(load_op_links=False)
    if variant == "lru512":
        from airflow.models.dagbag import CachedDBDagBag

        return CachedDBDagBag(load_op_links=False, cache_size=512, cache_ttl=0, stats_prefix="scheduler.dag_bag")
    if variant == "bytecache":
        from bytecache_airflow.dagbag import ByteBoundedDagBag

        return ByteBoundedDagBag(load_op_links=False, max_bytes=budget, ttl=None, stats_prefix="scheduler.dag_bag", background=False)
    raise ValueError(variant)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(args) -> dict:
    """One variant, in this process (the environment is already set for Airflow)."""
    from sqlalchemy import select, update

    from airflow.models.dag_version import DagVersion
    from airflow.models.dagrun import DagRun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    spec = WorkloadSpec.from_json(args.spec)
    rng = random.Random(f"churn-{spec.seed}")
    out = Path(args.out)
    session_cm = create_session()
    session = session_cm.__enter__()
    runs = list(session.scalars(select(DagRun).where(DagRun.run_id == "profiling").order_by(DagRun.dag_id)))
    base = {r.dag_id: SerializedDagModel.get(r.dag_id, session=session).data for r in runs}
    session.commit()
    dag_ids = [r.dag_id for r in runs]
    bag = make_bag(args.variant, args.budget)
    maintain = getattr(bag, "maintain", None)  # ours: calibration and reclaim run off the lookups
    counts = {"hits": 0, "misses": 0}
    count_hits_and_misses(bag, counts)

    tracker = None
    bin_path = out / f"churn-{args.variant}.bin"
    if args.tracker == "memray":
        import memray

        if bin_path.exists():
            bin_path.unlink()
        # Aggregated format: memray keeps per-stack totals (high-water mark and still-live at
        # exit) and heap snapshots instead of every event -- exact for what we read, and fast.
        tracker = memray.Tracker(str(bin_path), trace_python_allocators=True, memory_interval_ms=50,
                                 file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS)
        tracker.__enter__()
    else:
        import tracemalloc

        tracemalloc.start(16)
    t0 = time.time()
    series = []  # (t, versions, rss, traced or None)
    cursor = 0
    versions = 0
    try:
        for step in range(args.versions):
            dag_id = dag_ids[rng.randrange(len(dag_ids))]
            data = dict(base[dag_id])
            data["dag"] = dict(data["dag"])
            data["dag"]["doc_md"] = f"churn version {step} of {dag_id}"
            if SerializedDagModel.write_dag(LazyDeserializedDAG(data=data), bundle_name="dags-folder", session=session):
                versions += 1
            latest = DagVersion.get_latest_version(dag_id, session=session)
            session.execute(
                update(TaskInstance)
                .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == "profiling")
                .values(dag_version_id=latest.id),
                execution_options={"synchronize_session": False},
            )
            session.commit()
            for _ in range(args.lookups):
                run = runs[cursor % len(runs)]
                cursor += 1
                if bag.get_dag_for_run(run, session=session) is None:
                    raise RuntimeError(f"no DAG for run {run.dag_id}")
            session.commit()
            if maintain is not None:  # what the bag's maintenance thread does in a scheduler
                maintain()
            if step % args.sample_every == 0 or step == args.versions - 1:
                traced = None
                if tracker is None:
                    import tracemalloc

                    traced = tracemalloc.get_traced_memory()[0]
                series.append((time.time() - t0, versions, _rss(), traced))
        elapsed = time.time() - t0
        gc.unfreeze()  # evicted DAGs the bag froze wait for its next reclaim; here, free them now
        gc.collect()
        gauge = getattr(bag, "currsize", None)
        entries = len(bag._dags)
        uncollected = getattr(getattr(bag, "reclaimer", None), "uncollected", None)
        reclaims = getattr(getattr(bag, "reclaimer", None), "collections", None)
        ratio = getattr(getattr(bag, "calibrator", None), "ratio", None)
        retained = None
        heap_end = None
        if tracker is None:
            import tracemalloc

            snap = tracemalloc.take_snapshot()
            heap_end = tracemalloc.get_traced_memory()[0]
            retained = 0
            for st in snap.statistics("traceback"):
                frames = [(_func_name(f), f.filename, f.lineno) for f in st.traceback]
                if under_load_path(frames):
                    retained += st.size
            tracemalloc.stop()
    finally:
        if tracker is not None:
            tracker.__exit__(None, None, None)  # the bag is still alive: its DAGs are "leaked" at exit
        session_cm.__exit__(None, None, None)
    result = {
        "variant": args.variant,
        "budget": args.budget if args.variant == "bytecache" else None,
        "versions": versions,
        "lookups": args.versions * args.lookups,
        "seconds": elapsed,
        "hits": counts["hits"],
        "misses": counts["misses"],
        "entries": entries,
        "gauge": gauge,
        "uncollected": uncollected,
        "reclaims": reclaims,
        "calibrated_ratio": ratio,
        "rss_end": _rss(),
        "series": series,
    }
    if tracker is not None:
        result.update(_memray_figures(bin_path, t0))
        if not args.keep_bin:
            bin_path.unlink()
    else:
        result["retained_under_load_path"] = retained
        result["heap_end"] = heap_end
    del bag
    return result


def _func_name(frame) -> str:
    # tracemalloc frames carry no function name: recover it from the source line's enclosing def
    import linecache

    lineno = frame.lineno
    while lineno > 0:
        line = linecache.getline(frame.filename, lineno).lstrip()
        if line.startswith(("def ", "async def ")):
            return line.split("def ", 1)[1].split("(", 1)[0]
        lineno -= 1
    return ""


def _memray_figures(bin_path: Path, t0: float) -> dict:
    import memray

    retained = total = 0
    with memray.FileReader(str(bin_path), report_progress=False) as reader:
        start_ms = reader.metadata.start_time.timestamp() * 1000.0
        heap = [((s.time - start_ms) / 1000.0 - (t0 - reader.metadata.start_time.timestamp()), s.heap, s.rss) for s in reader.get_memory_snapshots()]
        for rec in reader.get_leaked_allocation_records(merge_threads=True):
            total += rec.size
            if under_load_path(rec.stack_trace()):
                retained += rec.size
        peak = reader.metadata.peak_memory
    return {"retained_under_load_path": retained, "heap_end": total, "heap_peak": peak, "heap_series": heap[:: max(1, len(heap) // 400)]}


# -- driver ---------------------------------------------------------------------------------------
def prepare(home: Path, spec: WorkloadSpec, log) -> None:
    (home / "plugins").mkdir(parents=True, exist_ok=True)
    write_dags(home / "dags", spec)
    env = airflow_env(home, AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL="0")
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=600)
    subprocess.run([sys.executable, "-m", "profiling.workload", "prepare", "--dags-folder", str(home / "dags"), "--spec", spec.to_json()],
                   env=env, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=900, cwd=str(ROOT))


def write_report(out: Path, results: list[dict], spec: WorkloadSpec, args) -> None:
    with open(out / "churn.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "t_s", "versions", "rss_bytes", "heap_bytes"])
        for r in results:
            heap = {round(t): h for t, h, _ in r.get("heap_series", [])}
            for t, v, rss, traced in r["series"]:
                h = traced if traced is not None else heap.get(round(t), heap.get(round(t) - 1, ""))
                w.writerow([r["variant"], f"{t:.2f}", v, rss, h])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 5))
        for r in results:
            if r.get("heap_series"):
                ax.plot([t for t, _, _ in r["heap_series"]], [h / MiB for _, h, _ in r["heap_series"]], label=f"{r['variant']} heap (memray)")
            else:
                ax.plot([t for t, *_ in r["series"]], [(x[3] or 0) / MiB for x in r["series"]], label=f"{r['variant']} heap (tracemalloc)")
            ax.plot([t for t, *_ in r["series"]], [x[2] / MiB for x in r["series"]], ls=":", label=f"{r['variant']} RSS")
        if args.budget:
            ax.axhline(args.budget / MiB, color="grey", ls="--", lw=0.8, label="bytecache budget")
        ax.set_xlabel("seconds")
        ax.set_ylabel("MiB")
        ax.set_title("DAG-bag retained heap under version churn")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "churn.png", dpi=100)
        plt.close(fig)
    except Exception as exc:  # the plot is a convenience
        print(f"churn: plot failed: {exc!r}")
    lines = [
        f"# DAG-bag churn ({args.tracker})",
        "",
        f"{spec.n_dags} DAGs / running runs (seed {spec.seed}), {args.versions} version steps, {args.lookups} lookups per step "
        f"(round-robin over the runs, `get_dag_for_run`); bytecache budget {args.budget / MiB:.1f} MiB.",
        "",
        "| variant | versions | seconds | hits / misses | entries | heap at end, MiB | retained under load path, MiB | bytes gauge, MiB | accounting error | RSS at end, MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        err = accounting_error(r.get("gauge"), r.get("retained_under_load_path"))
        lines.append(
            f"| {r['variant']} | {r['versions']} | {r['seconds']:.1f} | {r['hits']} / {r['misses']} | {r['entries']} | "
            f"{(r.get('heap_end') or 0) / MiB:.1f} | {(r.get('retained_under_load_path') or 0) / MiB:.1f} | "
            f"{mib(r.get('gauge'))} | {'n/a' if err is None else f'{100 * err:+.1f}%'} | {r['rss_end'] / MiB:.1f} |"
        )
    lines += [
        "",
        "Heap and retained figures are taken after `gc.unfreeze(); gc.collect()` with the bag still alive; 'retained under load path' "
        "is the memory allocated under `_get_dag`/`_read_dag` (a `dagbag.py`) and still live: the cached DAGs.",
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "churn.json").write_text(json.dumps(results, indent=1, default=str))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--dags", type=int, default=40)
    ap.add_argument("--size-mix", default=",".join(f"{k}:{v}" for k, v in CHURN_SIZE_MIX.items()))
    ap.add_argument("--versions", type=int, default=2000, help="version steps per variant")
    ap.add_argument("--lookups", type=int, default=10, help="get_dag_for_run calls per step")
    ap.add_argument("--budget", default="auto", help="bytecache budget (size) or auto: --budget-fraction of the active set")
    ap.add_argument("--budget-fraction", type=float, default=0.5, help="auto budget as a fraction of the active set (JSON x 6.5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tracker", choices=("memray", "tracemalloc"), default="memray")
    ap.add_argument("--sample-every", type=int, default=20)
    ap.add_argument("--small", action="store_true", help="the test's instance: 12 DAGs, 120 versions, dbdagbag and bytecache")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--home", type=Path, help="reuse a prepared Airflow home")
    ap.add_argument("--keep-bin", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.variant = args.worker
        args.budget = int(args.budget)
        print(json.dumps(worker(args), default=str))
        return 0

    if args.small:
        args.dags, args.versions, args.lookups, args.sample_every = 10, 80, 4, 4
        args.budget_fraction = 0.6
        args.size_mix = "50:40,200:60"
        if args.variants == ",".join(VARIANTS):
            args.variants = "dbdagbag,bytecache"
    spec = WorkloadSpec(n_dags=args.dags, size_mix=parse_size_mix(args.size_mix), seed=args.seed, redeploy_fraction=0)
    out = args.out or ROOT / "reports" / f"churn-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    own_home = args.home is None
    home = args.home or Path(tempfile.mkdtemp(prefix="bytecache-churn-"))
    try:
        with open(out / "setup.log", "ab") as log:
            if not (home / "airflow.db").exists():
                t = time.time()
                print(f"churn: preparing {spec.n_dags} DAGs in {home} ...", flush=True)
                prepare(home, spec, log)
                print(f"churn: ready in {time.time() - t:.0f}s", flush=True)
        import sqlite3

        with sqlite3.connect(home / "airflow.db") as c:
            active_json = c.execute("SELECT sum(length(data)) FROM serialized_dag").fetchone()[0]
        if args.budget == "auto":
            from profiling.workload import DEEP_PER_JSON

            budget = int(active_json * DEEP_PER_JSON * args.budget_fraction)
        else:
            from bytecache import parse_size

            budget = parse_size(args.budget)
        args.budget = budget
        env = airflow_env(home, AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL="0")
        results = []
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            cmd = [sys.executable, "-m", "profiling.dagbag_churn", "--worker", variant, "--spec", spec.to_json(),
                   "--versions", str(args.versions), "--lookups", str(args.lookups), "--budget", str(budget),
                   "--tracker", args.tracker, "--sample-every", str(args.sample_every), "--out", str(out)]
            if args.keep_bin:
                cmd.append("--keep-bin")
            t = time.time()
            r = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=1800)
            (out / f"{variant}.log").write_text(r.stderr)
            if r.returncode:
                print(r.stderr[-3000:], file=sys.stderr)
                raise RuntimeError(f"variant {variant} failed ({r.returncode}); see {out / (variant + '.log')}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            results.append(res)
            err = accounting_error(res.get("gauge"), res.get("retained_under_load_path"))
            print(
                f"churn: {variant:9s} {res['versions']} versions in {res['seconds']:.0f}s (+{time.time() - t - res['seconds']:.0f}s analysis): "
                f"hits {res['hits']} misses {res['misses']}, entries {res['entries']}, heap at end {(res.get('heap_end') or 0) / MiB:.1f} MiB, "
                f"retained under load path {(res.get('retained_under_load_path') or 0) / MiB:.1f} MiB"
                + (f", gauge {res['gauge'] / MiB:.1f} MiB (accounting error {100 * err:+.1f}%)" if err is not None else ""),
                flush=True,
            )
        write_report(out, results, spec, args)
        print(f"churn: report {out / 'summary.md'}")
    finally:
        if own_home:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
