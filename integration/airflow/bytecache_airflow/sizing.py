"""What to set ``[scheduler] dag_cache_max_bytes`` to: the DAG versions the scheduler needs now,
weighed by the cache's own model.

    python -m bytecache_airflow.sizing [--top 20] [--headroom 0.1] [--measure 8] [--json]
    python -m bytecache_airflow.sizing --trace scheduler-trace.txt.gz [--plot miss-ratio.png] [--trace-only]

Run it where the scheduler runs, with the deployment's Airflow configuration (``AIRFLOW_HOME``,
``airflow.cfg``, ``AIRFLOW__*``): it reads the metadata DB and changes nothing. A ``python -m``
module rather than an ``airflow`` subcommand because Airflow 3 plugins cannot add CLI commands
(only providers, executors and auth managers can), and the module runs in the scheduler's own
environment, so it sees the same DB, the same serialization code and the same operators.

The versions the scheduler needs now: the version of every queued and running DAG run (resolved as
the scheduler resolves it), and the latest version of every unpaused, non-stale DAG (the next run
it creates). Each is deserialized once, weighed with the cache's weighing model (the same features
and priors, refitted on deep measurements of the first ``--measure`` of them), and summed. The
recommended budget is that total plus ``--headroom``; the scheduler memory to plan for is the
budget plus the evicted-but-uncollected margin the soak bounds (a quarter of the budget).

With ``--trace FILE`` (a scheduler access trace, as the soak records it) it also prints and plots
the miss-ratio curve of that trace (``bytecache_airflow.missratio``): misses per scheduler loop
and deserialization time per minute against memory, for bytecache's budgets and for Airflow's
LRU at 128, 256, 512 and 1,024 entries. ``--trace-only`` skips the metadata DB (a trace copied
from elsewhere).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass

from bytecache.sizes import format_size

#: The scheduler's peak over its baseline stays within budget x this (live + not yet collected),
#: the bound the soak verifies.
UNCOLLECTED_MARGIN = 0.25
MIB = 1024**2

__all__ = ["NeededVersion", "SizingReport", "needed_versions", "size_deployment", "main"]


@dataclass(frozen=True)
class NeededVersion:
    dag_id: str
    dag_version_id: str
    why: str  # "running run", "queued run", "latest of an unpaused DAG" (the first reason found)
    tasks: int
    json_bytes: int
    weight: int  # estimated bytes in memory, by the cache's weighing model


@dataclass(frozen=True)
class SizingReport:
    versions: tuple[NeededVersion, ...]
    total_json_bytes: int
    total_weight: int
    recommended_max_bytes: int
    plan_memory_bytes: int
    headroom: float
    measured_samples: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def needed_versions(session) -> dict:
    """{dag_version_id: why} for the versions the scheduler needs now."""
    from sqlalchemy import select

    from airflow.models.dag import DagModel
    from airflow.models.dag_version import DagVersion
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import DagRunState

    needed: dict = {}
    runs = session.scalars(select(DagRun).where(DagRun.state.in_([DagRunState.RUNNING, DagRunState.QUEUED])))
    for run in runs:
        version_id = DBDagBag._version_from_dag_run(run, session=session)
        version_id = getattr(version_id, "id", version_id)  # Airflow 3.1 returns the DagVersion itself
        if version_id is not None:
            needed.setdefault(version_id, f"{run.state} run")
    dag_ids = session.scalars(
        select(DagModel.dag_id).where(DagModel.is_paused.is_(False), DagModel.is_stale.is_(False))
    ).all()
    for dag_id in dag_ids:
        latest = DagVersion.get_latest_version(dag_id, session=session)
        if latest is not None:
            needed.setdefault(latest.id, "latest of an unpaused DAG")
    return needed


def size_deployment(session, *, headroom: float = 0.1, measure: int = 8) -> SizingReport:
    """Load every needed version through a byte-bounded bag's own load path (the same JSON length
    and the same features the cache weighs by), deep-measure the first ``measure`` to refit the
    model as the cache does, and weigh them all with the refitted model. Each DAG is dropped
    right after it is weighed: the sizing holds one at a time, not the working set."""
    from bytecache_airflow.dagbag import ByteBoundedDagBag
    from bytecache_airflow.weighing import coverage_keys, dag_features

    if not 0 <= headroom <= 10:
        raise ValueError(f"--headroom must be between 0 and 10 (a fraction of the total), got {headroom!r}")
    if measure < 0:
        raise ValueError(f"--measure must be >= 0, got {measure!r}")
    start = time.perf_counter()
    needed = needed_versions(session)
    bag = ByteBoundedDagBag(False, max_bytes=None, ttl=None, background=False, stats_prefix="bytecache.sizing")
    calibrator = bag.calibrator
    loaded = []
    for version_id, why in needed.items():
        dag = bag.get_dag(version_id, session=session)
        if dag is None:
            continue  # the version's serialized DAG is gone (cleaned up): nothing to hold
        json_bytes = bag.cache.peek(version_id).serialized_bytes
        features = dag_features(dag, json_bytes)
        if calibrator.samples < measure:
            calibrator.measure_and_record(dag, features, coverage_keys(features))
        loaded.append((version_id, dag.dag_id, why, len(dag.task_dict), json_bytes, features))
        bag.cache.pop(version_id, None)
        del dag
    versions = tuple(
        sorted(
            (
                NeededVersion(dag_id, str(version_id), why, tasks, json_bytes, calibrator.weight(features))
                for version_id, dag_id, why, tasks, json_bytes, features in loaded
            ),
            key=lambda v: -v.weight,
        )
    )
    total = sum(v.weight for v in versions)
    recommended = max(16 * MIB, math.ceil(total * (1 + headroom) / MIB) * MIB)
    return SizingReport(
        versions=versions,
        total_json_bytes=sum(v.json_bytes for v in versions),
        total_weight=total,
        recommended_max_bytes=recommended,
        plan_memory_bytes=int(recommended * (1 + UNCOLLECTED_MARGIN)),
        headroom=headroom,
        measured_samples=calibrator.samples,
        seconds=time.perf_counter() - start,
    )


def format_report(report: SizingReport, *, top: int = 20) -> str:
    lines = [
        f"DAG versions the scheduler needs now: {len(report.versions)} "
        f"(serialized {format_size(report.total_json_bytes)}, in memory ~{format_size(report.total_weight)}; "
        f"weighing model refitted on {report.measured_samples} deep measurements; {report.seconds:.1f} s)",
        "",
        f"Top {min(top, len(report.versions))} by estimated memory:",
        "",
        "| DAG | version | why | tasks | serialized | in memory (est.) |",
        "|---|---|---|---|---|---|",
    ]
    for v in report.versions[:top]:
        lines.append(
            f"| {v.dag_id} | {v.dag_version_id[:8]} | {v.why} | {v.tasks} | {format_size(v.json_bytes)} | {format_size(v.weight)} |"
        )
    lines += [
        f"| **total** | | | {sum(v.tasks for v in report.versions)} | {format_size(report.total_json_bytes)} | "
        f"{format_size(report.total_weight)} |",
        "",
        f"Recommended: [scheduler] dag_cache_max_bytes = {report.recommended_max_bytes // MIB}MiB "
        f"(the total + {report.headroom:.0%} headroom, at least 16 MiB)",
        f"Plan scheduler memory: its baseline + {format_size(report.plan_memory_bytes)} "
        f"(budget + {UNCOLLECTED_MARGIN:.0%} evicted but not yet collected)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bytecache_airflow.sizing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=20, help="how many of the heaviest versions to list (default 20)")
    parser.add_argument("--headroom", type=float, default=0.1, help="budget above the total, as a fraction (0.1)")
    parser.add_argument("--measure", type=int, default=8, help="deep-measure this many DAGs to refit the model (8)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--trace", help="a recorded scheduler access trace: also print and plot its miss-ratio curve")
    parser.add_argument("--plot", default="miss-ratio.png", help="where to write the curve's plot (default miss-ratio.png)")
    parser.add_argument("--no-plot", action="store_true", help="print the curve only")
    parser.add_argument("--trace-only", action="store_true", help="only the --trace curve; do not read the metadata DB")
    parser.add_argument("--warmup-loops", type=int, help="loops of the trace left out (default: its first third)")
    args = parser.parse_args(argv)
    if args.trace_only and not args.trace:
        print("bytecache sizing: --trace-only needs --trace FILE", file=sys.stderr)
        return 2
    out: dict = {}
    try:
        curve = _trace_curve(args) if args.trace else None  # a bad trace fails before the DB is read
        if not args.trace_only:
            from airflow.utils.session import create_session

            with create_session() as session:
                report = size_deployment(session, headroom=args.headroom, measure=args.measure)
            out["sizing"] = report.to_dict()
            if not args.json:
                print(format_report(report, top=args.top))
    except (ValueError, OSError) as exc:
        print(f"bytecache sizing: {exc}", file=sys.stderr)
        return 2
    if curve is not None:
        from bytecache_airflow.missratio import format_curve

        out["miss_ratio_curve"] = curve.to_dict()
        if not args.json:
            print("\n" if "sizing" in out else "", end="")
            print(format_curve(curve))
            if not args.no_plot:
                print(f"\nPlot: {args.plot}")
    if args.json:
        print(json.dumps(out if args.trace else out["sizing"], indent=1))
    return 0


def _trace_curve(args):
    from bytecache_airflow.missratio import miss_ratio_curve, plot_curve
    from bytecache_airflow.trace import read_trace

    if args.warmup_loops is not None and args.warmup_loops < 0:
        raise ValueError(f"--warmup-loops must be >= 0, got {args.warmup_loops!r}")
    try:
        trace = read_trace(args.trace)
    except FileNotFoundError:
        raise ValueError(f"--trace: no such file {args.trace!r}") from None
    curve = miss_ratio_curve(trace, warmup_loops=args.warmup_loops)
    if not args.no_plot:
        plot_curve(curve, args.plot, title=f"miss-ratio curve of {args.trace.rsplit('/', 1)[-1]}")
    return curve


if __name__ == "__main__":
    sys.exit(main())
