"""``python -m profiling.soak run [options]`` and ``python -m profiling.soak report DIR``.

``run`` measures (see :mod:`profiling.soak.runner`) and writes the report folder; ``report``
re-renders a saved folder from its ``results.json``. Both print the summary, the verdict and
where the plot is. Exit status: 0 flat, 1 growing, 3 inconclusive, 2 error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from profiling.scratch import scratch_dir
from profiling.soak import report
from profiling.soak.analysis import FLAT, GROWING
from profiling.soak.model import CONFIGS, SoakResults, SoakSpec, reused_reference
from profiling.soak.runner import ROOT, AirflowInstall, Interrupted, find_airflow, run_soak
from profiling.workload import DEFAULT_SIZE_MIX, QUICK_SIZE_MIX, WorkloadSpec, parse_size_mix

QUICK_CONFIGS = ("unbounded", "reference", "bytecache")
#: Before Airflow 3.3 there is no SCHEDULER_DAG_CACHE_SIZE: the stock cache is the unbounded one.
PRE_33_CONFIGS = ("stock", "bytecache")
#: --quick: (r) and (c) need about two minutes to reach their plateau (every run touched, the
#: cache full and cycling); (a) only has to show that it does not stop growing.
QUICK_SECONDS = {"unbounded": 100.0, "reference": 180.0, "bytecache": 180.0}
#: --quick on a loaded machine: every run lasts until its scheduler finished this many loops (the
#: warm-up's four and eight to judge; about 80 s on an idle two-core machine, so it binds only under load)
QUICK_MIN_LOOPS = 12
STATUS = {FLAT: 0, GROWING: 1}
INCONCLUSIVE_STATUS, ERROR_STATUS = 3, 2


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true", help="CI-sized: 64 DAGs, (a) 100 s, (r) and (c) 180 s")
    ap.add_argument("--minutes", type=float, help="minutes per configuration (default: quick sizes, else 10)")
    ap.add_argument("--configs", help=f"comma-separated subset of {','.join(CONFIGS)}")
    ap.add_argument("--config-minutes", default="", help="per-configuration minutes, e.g. reference=12,stock=12")
    ap.add_argument("--out", type=Path, help="report folder (default reports/soak-<timestamp>)")
    ap.add_argument("--dags", type=int, help="number of DAGs (quick 64, else 250)")
    ap.add_argument("--size-mix", help="tasks:weight,... (default: the quick or the full mix, 10..2000 tasks)")
    ap.add_argument("--active-runs", type=int, help="running runs (default: one per DAG)")
    ap.add_argument("--redeploy-fraction", type=float, default=0.15, help="fraction of DAG files rewritten per tick")
    ap.add_argument("--redeploy-interval", type=float, default=5.0, help="seconds between redeploy ticks")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget", help="bytecache budget (e.g. 64MiB); default: half the active set, whole MiB")
    ap.add_argument("--ttl", default="3600", help="[scheduler] dag_cache_ttl for the bytecache run")
    ap.add_argument("--policy", help="[scheduler] dag_cache_policy for the bytecache run")
    ap.add_argument("--warmup-fraction", type=float, default=0.45, help="share of each run not judged (at most 10 min)")
    ap.add_argument("--warmup-loops", type=int, default=4,
                    help="the warm-up lasts at least until the scheduler finished this many loops (default 4: a quick sweep)")
    ap.add_argument("--min-loops", type=int,
                    help="a run goes on past its minutes until the scheduler finished this many loops, at most 3x as long "
                         "(default: 12 with --quick, else 0)")
    ap.add_argument("--min-update-interval", type=int, default=2, help="[core] min_serialized_dag_update_interval")
    ap.add_argument("--status-every", type=float, help="seconds between status lines (default 15, or 60 for runs over 10 min)")
    ap.add_argument("--trace", action=argparse.BooleanOptionalAction, default=True, help="record the bytecache run's access trace")
    ap.add_argument("--memray", choices=("off", "default", "detailed"), default="default",
                    help="memray tracing of the scheduler (detailed: native + Python allocators, slow)")
    ap.add_argument("--keep-bin", action="store_true", help="keep the memray capture files")
    ap.add_argument("--keep-work", action="store_true", help="keep the Airflow homes")
    ap.add_argument("--concurrent", action="store_true",
                    help="run the configurations at the same time (each its own DB and statsd listener), so they share "
                         "the machine's load; the fairest side-by-side of loop times on a shared machine")
    ap.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=None,
                    help="[scheduler] dag_cache_gc_freeze for the bytecache run (default: the setting's default, off)")
    ap.add_argument("--reference-from", type=Path,
                    help="reuse the reference run (r) of an earlier report on the same workload spec (and the same Airflow)")
    ap.add_argument("--airflow", metavar="VERSION|PYTHON",
                    help="run Airflow (db migrate, dag-processor, scheduler) from another environment: a version such as "
                         "3.2.2 (the Makefile's .venv-3.2, `make venv-3.2`) or the path of that environment's python; "
                         "default: this interpreter's. Before 3.3 the default configs are stock,bytecache; "
                         "3.2 also runs reference (DBDagBag cache_size=1)")


def spec_from_args(args, airflow: AirflowInstall) -> SoakSpec:
    """The :class:`SoakSpec` the options describe for ``airflow`` (errors name the option and the bad value)."""
    from bytecache import parse_size

    if args.configs:
        configs = tuple(c.strip() for c in args.configs.split(",") if c.strip())
    elif not airflow.cache_size:  # before 3.3 the stock cache is the unbounded one; reference only when asked (3.2)
        configs = PRE_33_CONFIGS
    else:
        configs = QUICK_CONFIGS if args.quick else CONFIGS
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        raise ValueError(f"--configs: unknown configuration(s) {bad}; choose from {', '.join(CONFIGS)}")
    configs = tuple(c for c in CONFIGS if c in configs)  # always in the run order
    if args.minutes is not None:
        durations = {c: 60.0 * args.minutes for c in configs}
    elif args.quick:
        durations = {c: QUICK_SECONDS.get(c, 180.0) for c in configs}
    else:
        durations = {c: 600.0 for c in configs}
    for part in filter(None, (x.strip() for x in args.config_minutes.split(","))):
        name, _, minutes = part.partition("=")
        if name not in CONFIGS:
            raise ValueError(f"--config-minutes: unknown configuration {name!r} in {part!r}")
        try:
            durations[name] = 60.0 * float(minutes)
        except ValueError:
            raise ValueError(f"--config-minutes: {minutes!r} is not a number of minutes (in {part!r})") from None
    mix = parse_size_mix(args.size_mix) if args.size_mix else (QUICK_SIZE_MIX if args.quick else DEFAULT_SIZE_MIX)
    workload = WorkloadSpec(
        n_dags=args.dags or (64 if args.quick else 250),
        size_mix=dict(mix),
        redeploy_fraction=args.redeploy_fraction,
        redeploy_interval=args.redeploy_interval,
        active_runs=args.active_runs,
        duration=max(durations.values()),
        seed=args.seed,
    )
    return SoakSpec(
        workload=workload,
        configs=configs,
        durations={c: durations[c] for c in configs},
        budget=parse_size(args.budget) if args.budget else None,
        warmup_fraction=args.warmup_fraction,
        warmup_loops=args.warmup_loops,
        min_loops=args.min_loops if args.min_loops is not None else (QUICK_MIN_LOOPS if args.quick else 0),
        ttl=args.ttl,
        policy=args.policy,
        min_update_interval=args.min_update_interval,
        memray=args.memray,
        trace=args.trace,
        airflow=airflow.version,
        airflow_cache_size=airflow.cache_size,
        airflow_entry_cap=airflow.entry_cap,
        concurrent=args.concurrent,
        gc_freeze=args.gc_freeze,
    )


def show(results: SoakResults, out: Path, summary) -> int:
    print((out / "summary.md").read_text(), flush=True)
    trace = out / "bytecache" / "scheduler-trace.txt.gz"
    if trace.exists():
        print(f"soak: access trace {trace} (replay: python -m profiling.replay_trace {trace})")
    main = summary.main
    print(f"soak: verdict {main.outcome if main else 'inconclusive'}; plot {out / 'rss.png'}; summary {out / 'summary.md'}", flush=True)
    if any(r.error for r in results.runs):
        return ERROR_STATUS
    return STATUS.get(main.outcome, INCONCLUSIVE_STATUS) if main else INCONCLUSIVE_STATUS


def cmd_run(args, argv: list[str]) -> int:
    try:
        airflow = find_airflow(args.airflow)
        spec = spec_from_args(args, airflow)
        reference = None
        if args.reference_from:
            reference = reused_reference(SoakResults.load(args.reference_from), spec, str(args.reference_from))
    except (ValueError, FileNotFoundError) as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return ERROR_STATUS
    out = args.out or ROOT / "reports" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    with scratch_dir("bytecache-soak-", args.keep_work, "soak: Airflow homes") as work:
        return run_and_report(spec, reference, out, work, args, argv, airflow)


def run_and_report(spec: SoakSpec, reference, out: Path, work: Path, args, argv: list[str], airflow: AirflowInstall) -> int:
    longest = max(spec.durations.values())
    status_every = args.status_every or (15.0 if longest <= 600 else 60.0)
    command = shlex.join(["python", "-m", "profiling.soak", "run", *argv])
    t0 = time.time()
    print(f"soak: Airflow {airflow.version} ({airflow.python}); report folder {out}; work dir {work}", flush=True)
    try:
        run_soak(spec, out, work, reference=reference, status_every=status_every, keep_bin=args.keep_bin, command=command,
                 airflow=airflow)
        results = SoakResults.load(out)  # the report is rendered from the saved file, as `report DIR` does
        summary = report.write_all(results, out)
        print(f"soak: took {(time.time() - t0) / 60:.1f} min", flush=True)
        return show(results, out, summary)
    except Interrupted as exc:
        print(f"soak: interrupted ({exc}); everything stopped", flush=True)
        return 130
    except Exception as exc:
        print(f"soak: failed: {exc!r}", flush=True)
        return ERROR_STATUS


def cmd_report(args) -> int:
    try:
        results = SoakResults.load(args.dir)
    except (ValueError, FileNotFoundError) as exc:
        print(f"soak report: {exc}", file=sys.stderr)
        return ERROR_STATUS
    summary = report.write_all(results, args.dir)
    return show(results, args.dir, summary)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m profiling.soak", description="The scheduler soak: does the real airflow scheduler's RSS stay flat under DAG-version churn?",
                                 epilog="`run --help` lists the run's options, among them --airflow VERSION|PYTHON: the soak on another "
                                        "Airflow release's environment (e.g. 3.2.2: ./.venv-3.2)")
    sub = ap.add_subparsers(dest="command", required=True)
    add_run_arguments(sub.add_parser("run", help="measure: run the configurations and write the report folder"))
    rep = sub.add_parser("report", help="re-render a saved report folder from its results.json")
    rep.add_argument("dir", type=Path)
    args = ap.parse_args(argv)
    if args.command == "report":
        return cmd_report(args)
    return cmd_run(args, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
