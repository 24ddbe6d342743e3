"""Replay a recorded scheduler access trace through the core benchmark's policies.

    python -m profiling.replay_trace profiling/traces/quick-soak.trace.gz
    python -m profiling.replay_trace TRACE --fractions 0.1,0.25,0.5,1 --no-offline

A trace is what ``profiling.bootstrap`` records with ``BYTECACHE_PROFILE_TRACE``: one line per
lookup the real scheduler made (``bytecache_airflow.trace``; only the versions and weights are
replayed here).
For budgets of 25/50/100% of the working set (the bytes of all distinct versions in the trace,
each at its last weight) it prints object and byte hit ratios for bytecache's policies,
cachetools' ``LRUCache`` (Airflow's cache, weighed in bytes here), and the offline references
of ``benchmarks/offline.py`` (the better of Belady-with-bypass and Belady-Size, and the
provable upper bound). Replays go through ``benchmarks.replay.replay``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.replay import replay, weight_of
from bytecache_airflow.trace import read_trace
from profiling.units import mib

__all__ = ["load_trace", "working_set", "replay_table", "main"]


def load_trace(path: Path | str) -> list[tuple[str, int]]:
    """The ``(version, weight)`` requests of a trace (either format of ``bytecache_airflow.trace``)."""
    return [(a.key, a.weight) for a in read_trace(path).accesses]


def working_set(trace: list[tuple[str, int]]) -> int:
    last: dict[str, int] = {}
    for k, w in trace:
        last[k] = w
    return sum(last.values())


def policies() -> dict:
    import cachetools

    from bytecache import POLICIES, ByteCache

    out = {f"bytecache {p}": (lambda b, p=p: (lambda: ByteCache(b, policy=p))) for p in sorted(POLICIES)}
    out["cachetools LRU"] = lambda b: (lambda: cachetools.LRUCache(b, getsizeof=weight_of))
    return out


def replay_table(trace: list[tuple[str, int]], fractions=(0.25, 0.5, 1.0), offline: bool = True) -> list[dict]:
    ws = working_set(trace)
    rows = []
    for frac in fractions:
        budget = max(1, int(ws * frac))
        row = {"fraction": frac, "budget": budget, "results": {}}
        for name, factory in policies().items():
            row["results"][name] = replay(trace, factory(budget))
        if offline:
            from benchmarks import offline as off

            row["results"]["offline (best of Belady, Belady-Size)"] = off.offline_reference(trace, budget)
            row["results"]["upper bound (PFOO-U)"] = off.upper_bound(trace, budget)
        rows.append(row)
    return rows


def format_table(trace, rows) -> str:
    ws = working_set(trace)
    keys = len({k for k, _ in trace})
    names = list(rows[0]["results"]) if rows else []
    lines = [
        f"trace: {len(trace)} lookups, {keys} distinct versions, working set {mib(ws)} MiB",
        "",
        "| budget | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for row in rows:
        cells = [f"{100 * h:.1f} / {100 * b:.1f}" for h, b in (row["results"][n] for n in names)]
        lines.append(f"| {int(100 * row['fraction'])}% ({mib(row['budget'])} MiB) | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("cells: object hit % / byte hit %")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", type=Path)
    ap.add_argument("--fractions", default="0.25,0.5,1", help="budgets as fractions of the working set")
    ap.add_argument("--no-offline", action="store_true", help="skip the offline references")
    args = ap.parse_args(argv)
    trace = load_trace(args.trace)
    if not trace:
        print(f"{args.trace}: empty trace", file=sys.stderr)
        return 1
    fractions = [float(x) for x in args.fractions.split(",") if x.strip()]
    print(format_table(trace, replay_table(trace, fractions, offline=not args.no_offline)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
