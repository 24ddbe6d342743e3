"""How close the bag's working-set gauge is to the truth computed from the recorded access trace.

    python -m profiling.working_set_accuracy reports/ws-15mib reports/ws-36mib reports/ws-90mib
    python -m profiling.working_set_accuracy TRACE.gz [TRACE.gz ...] [--skip-loops 8]

Takes soak report folders (their bytecache run's ``scheduler-trace.txt.gz``) or trace files
recorded with loop marks (``bytecache_airflow.trace``). At the end of every scheduler loop the
trace holds the gauge as the bag computed it; the truth at the same instant comes from every
lookup of the trace (``true_working_set``: the same window definition, no pruning, no cap). Loops
of the warm-up (``--skip-loops``, default: the first third) are left out: until a version has
been read twice there is no window.

With ``--sweep-loops N`` (the loops one sweep of every running run takes: runs /
``max_dagruns_per_loop_to_schedule``, rounded up) a second truth is shown that does not share the
gauge's window definition: the versions read in the last N loops, each at its last weight.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bytecache_airflow.trace import Trace, quantile, read_trace, true_working_set
from profiling.units import MiB

__all__ = ["accuracy", "format_table", "main"]

TARGET = 0.10  # the bound: the gauge within ±10% of the truth


def last_loops_working_set(trace: Trace, loop: int, sweep_loops: int) -> int:
    """The weight of the versions read in loops ``loop - sweep_loops + 1`` .. ``loop`` (each at its last weight)."""
    last: dict[str, int] = {}
    for a in trace.accesses:
        if loop - sweep_loops < a.loop <= loop:
            last[a.key] = a.weight
    return sum(last.values())


def accuracy(trace: Trace, *, skip_loops: int | None = None, budget: int | None = None, sweep_loops: int | None = None) -> dict:
    """Gauge against truth at every loop mark past the warm-up: medians and the error spread."""
    marks = [m for m in trace.loops if m.working_set_bytes is not None]
    if not marks:
        raise ValueError("the trace has no loop marks with a working-set gauge (recorded before they were added, or not a bytecache bag)")
    skip = len(marks) // 3 if skip_loops is None else skip_loops
    marks = marks[skip:]
    if not marks:
        raise ValueError(f"no loop marks left after skipping {skip} warm-up loops")
    truth = {s.t: s for s in true_working_set(trace.accesses, [m.t for m in marks])}
    errors, gauges, truths, windows, true_windows = [], [], [], [], []
    for m in marks:
        true = truth[m.t]
        gauges.append(m.working_set_bytes)
        truths.append(true.bytes)
        windows.append(m.window or 0.0)
        true_windows.append(true.window or 0.0)
        errors.append((m.working_set_bytes - true.bytes) / true.bytes if true.bytes else 0.0)
    by_loops = {}
    if sweep_loops:
        sweeps = [last_loops_working_set(trace, m.loop, sweep_loops) for m in marks]
        sweep_errors = [(g - t) / t if t else 0.0 for g, t in zip(gauges, sweeps)]
        by_loops = {"sweep_loops": sweep_loops, "sweep_truth_median": quantile(sweeps, 0.5),
                    "sweep_error_median": quantile(sweep_errors, 0.5), "sweep_error_max_abs": max(abs(e) for e in sweep_errors)}
    return {
        **by_loops,
        "budget": budget,
        "samples": len(marks),
        "loops_skipped": skip,
        "truth_median": quantile(truths, 0.5),
        "truth_max": max(truths),
        "gauge_median": quantile(gauges, 0.5),
        "error_median": quantile(errors, 0.5),
        "error_p05": quantile(errors, 0.05),
        "error_p95": quantile(errors, 0.95),
        "error_max_abs": max(abs(e) for e in errors),
        "within_target": sum(abs(e) <= TARGET for e in errors) / len(errors),
        "window_median": quantile(windows, 0.5),
        "true_window_median": quantile(true_windows, 0.5),
    }


def _source(path: Path) -> tuple[Path, int | None]:
    """(trace file, budget) for a soak report folder or a trace file."""
    if path.is_dir():
        results = json.loads((path / "results.json").read_text())
        return path / "bytecache" / "scheduler-trace.txt.gz", results.get("budget")
    return path, None


def format_table(rows: list[tuple[str, dict]]) -> str:
    lines = [
        "| run | budget / true working set | true working set (median) | gauge (median) | error median [p5, p95] | max abs error | loops within ±10% | window: gauge / truth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    swept = [r for _, r in rows if r.get("sweep_loops")]
    if swept:
        lines[0] += " truth by loops: last N loops (median) | gauge error vs it: median, max abs |"
        lines[1] += "---|---|"
    for name, r in rows:
        share = f"{r['budget'] / r['truth_median']:.0%}" if r["budget"] and r["truth_median"] else "n/a"
        budget = f"{r['budget'] / MiB:.1f} MiB = {share}" if r["budget"] else "n/a"
        lines.append(
            f"| {name} | {budget} | {r['truth_median'] / MiB:.1f} MiB | {r['gauge_median'] / MiB:.1f} MiB "
            f"| {r['error_median']:+.1%} [{r['error_p05']:+.1%}, {r['error_p95']:+.1%}] | {r['error_max_abs']:.1%} "
            f"| {r['within_target']:.0%} of {r['samples']} | {r['window_median']:.0f} s / {r['true_window_median']:.0f} s |"
            + (f" {r['sweep_truth_median'] / MiB:.1f} MiB (N = {r['sweep_loops']}) | {r['sweep_error_median']:+.1%}, "
               f"{r['sweep_error_max_abs']:.1%} |" if r.get("sweep_loops") else (" n/a | n/a |" if swept else ""))
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m profiling.working_set_accuracy", description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+", type=Path, help="soak report folders or trace files")
    ap.add_argument("--skip-loops", type=int, help="warm-up loops left out (default: the first third)")
    ap.add_argument("--sweep-loops", type=int, help="also compare with the versions read in the last N loops (one sweep)")
    args = ap.parse_args(argv)
    rows = []
    for source in args.sources:
        path, budget = _source(source)
        try:
            rows.append((source.name, accuracy(read_trace(path), skip_loops=args.skip_loops, budget=budget, sweep_loops=args.sweep_loops)))
        except (ValueError, FileNotFoundError) as exc:
            print(f"{source}: {exc}", file=sys.stderr)
            return 2
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
