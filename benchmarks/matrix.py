#!/usr/bin/env python
"""The trace matrix: every access pattern x every budget x every policy, in one markdown table and
one plot, with each cell where ours misses a target of issue 9 marked.

    python -m benchmarks.matrix                      # full run (see README for its time)
    python -m benchmarks.matrix --quick              # smaller traces, < 1 minute
    python -m benchmarks.matrix --only sched-700 --budgets 10,60
    python -m benchmarks.matrix --policy lru         # judge another policy of bytecache.POLICIES too

Budgets are shares of each pattern's working set (the bytes, or entries, of the keys it reads).
The metric of a cell depends on the pattern: object hit % for unit weights, byte hit % for
weighted traces, misses per loop in steady state for the scheduler pattern (see ``Pattern``).

From Python: ``run_matrix(patterns, budgets, columns)`` with ``build_patterns``, ``COLUMNS`` /
``ours_column(policy)``, then ``format_table``, ``judge``/``format_summary`` and ``plot``.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Sequence

import cachetools

from bytecache import DEFAULT_POLICY, POLICIES, ByteCache

from . import libcachesim_ref, offline, workloads
from .replay import Ticks, hit_ratios, replay_hits, weight_of

__all__ = [
    "BUDGETS", "Pattern", "Outcome", "Column", "Cell", "COLUMNS", "ours_column", "build_patterns",
    "run_matrix", "loop_misses", "steady_misses", "sweeps_to_settle", "judge", "format_table",
    "format_summary", "plot", "main",
]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUDGETS = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 1.20)
SETTLE_TOLERANCE = 0.05  # "settled": every later sweep's misses/loop within 5% of the final value...
SETTLE_FLOOR = 0.1  # ...or within 0.1 misses/loop of it, so that a final value of 0 can be reached
KB, MB = workloads.KB, workloads.MB


# -- patterns ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # compared by identity: a trace can be long
class Pattern:
    """A trace and how to judge it.

    ``working_set``: what 100% budget means (bytes, or entries for unit weights). ``weighted``:
    cells report the byte hit ratio, else the object hit ratio. ``loop_len``: set for the scheduler
    pattern, whose cells report misses per loop of ``loop_len`` requests (``loops_per_sweep`` loops
    visit every key once). ``ttl``: idle TTL in requests for the caches that have one.
    """

    name: str
    trace: list
    working_set: int
    weighted: bool
    note: str = ""
    ttl: int | None = None
    loop_len: int | None = None
    loops_per_sweep: int | None = None

    @property
    def is_scheduler(self) -> bool:
        return self.loop_len is not None

    @property
    def metric(self) -> str:
        return "misses/loop" if self.is_scheduler else ("byte hit %" if self.weighted else "object hit %")


def _scheduler(n: int, sweeps: int) -> Pattern:
    per_loop = 20
    return Pattern(f"sched-{n}", workloads.scheduler_loops(n, sweeps, per_loop=per_loop), 45 * KB * n, True,
                   f"scheduler: {n} keys, 20 per loop read twice, 30-60 kB, {sweeps} sweeps",
                   loop_len=2 * per_loop, loops_per_sweep=n // per_loop)


def _working_set(trace, weighted: bool) -> int:
    return workloads.total_weight(trace) if weighted else len({k for k, _ in trace})


def _unit(name: str, trace: list, note: str) -> Pattern:
    return Pattern(name, trace, _working_set(trace, False), False, note)


def _churn(quick: bool, ttl: bool) -> Pattern:
    n_dags, n_req = (300, 15_000) if quick else (500, 50_000)
    trace = workloads.version_churn(n_dags, n_req, weigh=workloads.log_uniform_weights(20 * KB, 20 * MB))
    live = workloads.total_weight([(k[0], w) for k, w in trace])  # the latest version of every DAG
    note = f"version churn: {n_dags} DAGs Zipf 0.9, 1% new version/request, 20 kB-20 MB, {n_req:,} requests"
    if not ttl:
        return Pattern("churn", trace, live, True, note + ", no TTL")
    idle = 5 * n_dags
    return Pattern("churn-ttl", trace, live, True, note + f", idle TTL {idle:,} requests", ttl=idle)


def _lirs(name: str, quick: bool) -> Pattern:
    trace = workloads.load_lirs(name)
    note = f"LIRS trace {name}, {len(trace):,} refs"
    if quick and len(trace) > 60_000:
        trace = trace[:50_550]
        note = f"LIRS trace {name}, first {len(trace):,} refs (--quick)"
    return _unit(f"lirs-{name}", trace, note)


def _soak(path: str) -> Pattern:
    from profiling.replay_trace import load_trace

    trace = load_trace(path)
    name = os.path.basename(path).split(".")[0]
    return Pattern(f"soak-{name}", trace, workloads.total_weight(trace), True,
                   f"scheduler soak trace {os.path.relpath(path, ROOT)}, {len(trace):,} lookups")


def pattern_factories(quick: bool = False) -> dict[str, Callable[[], Pattern]]:
    """Every pattern of the matrix by name, built only when called (some take seconds)."""
    sched = ((200, 8), (700, 8)) if quick else ((200, 20), (700, 20), (2000, 20), (5000, 20))
    out: dict[str, Callable[[], Pattern]] = {f"sched-{n}": (lambda n=n, s=s: _scheduler(n, s)) for n, s in sched}
    n_cyc, passes = (500, 8) if quick else (1000, 20)
    out["cyclic"] = lambda: _unit("cyclic", workloads.cyclic_sweep(n_cyc, passes, weigh=workloads.unit_weights),
                                  f"cyclic sweep: {n_cyc} keys x {passes} passes, unit weights")
    n_keys, n_req = (2000, 20_000) if quick else (5000, 100_000)
    for alpha in (0.8, 1.0):
        out[f"zipf-{alpha:g}"] = lambda a=alpha: _unit(
            f"zipf-{a:g}", workloads.zipf(n_keys, n_req, a, weigh=workloads.unit_weights),
            f"Zipf {a:g}: {n_keys} keys, {n_req:,} requests, unit weights")
    out["churn"] = lambda: _churn(quick, ttl=False)
    out["churn-ttl"] = lambda: _churn(quick, ttl=True)
    for name in workloads.LIRS_CAPACITIES:
        out[f"lirs-{name}"] = lambda name=name: _lirs(name, quick)
    for path in sorted(glob.glob(os.path.join(ROOT, "profiling", "traces", "*.trace*"))):
        out[f"soak-{os.path.basename(path).split('.')[0]}"] = lambda path=path: _soak(path)
    return out


def build_patterns(quick: bool = False, only: Sequence[str] | None = None) -> list[Pattern]:
    """The patterns whose name starts with one of ``only`` (all if empty)."""
    factories = pattern_factories(quick)
    chosen = [n for n in factories if not only or any(n.startswith(o) for o in only)]
    if not chosen:
        raise ValueError(f"--only: no pattern starts with {', '.join(only)}; patterns: {', '.join(factories)}")
    return [factories[n]() for n in chosen]


# -- outcomes ---------------------------------------------------------------------------------------
def loop_misses(hits: Sequence[int], loop_len: int) -> list[int]:
    """Misses in each consecutive ``loop_len`` requests, given each request's outcome (1 = hit)."""
    return [loop_len - sum(hits[i:i + loop_len]) for i in range(0, len(hits), loop_len)]


def steady_misses(per_loop: Sequence[int]) -> float:
    """Mean misses per loop over the second half of the loops (the steady state)."""
    half = per_loop[len(per_loop) // 2:]
    return sum(half) / len(half) if half else 0.0


def sweeps_to_settle(per_loop: Sequence[int], loops_per_sweep: int) -> int:
    """How many whole sweeps pass before every later sweep's mean misses/loop stays within
    ``SETTLE_TOLERANCE`` of the final (steady) value (or ``SETTLE_FLOOR`` of it, if larger)."""
    final = steady_misses(per_loop)
    tolerance = max(SETTLE_TOLERANCE * final, SETTLE_FLOOR)
    sweeps = [per_loop[i:i + loops_per_sweep] for i in range(0, len(per_loop), loops_per_sweep)]
    settled = len(sweeps)
    for s in range(len(sweeps) - 1, -1, -1):
        if abs(sum(sweeps[s]) / len(sweeps[s]) - final) > tolerance:
            break
        settled = s
    return settled


@dataclass
class Outcome:
    """One policy at one budget on one pattern. ``bound``: a provable upper bound on the ratios
    (offline column, weighted traces). ``note``: e.g. that the policy has no TTL."""

    object_ratio: float
    byte_ratio: float
    per_loop: list[int] | None = None
    bound: tuple[float, float] | None = None
    note: str = ""

    @classmethod
    def from_hits(cls, pattern: Pattern, hits: Sequence[int], note: str = "") -> "Outcome":
        obj, byte = hit_ratios(pattern.trace, hits)
        per_loop = loop_misses(hits, pattern.loop_len) if pattern.is_scheduler else None
        return cls(obj, byte, per_loop, note=note)

    @property
    def steady(self) -> float | None:
        return None if self.per_loop is None else steady_misses(self.per_loop)

    def settle(self, pattern: Pattern) -> int | None:
        return None if self.per_loop is None else sweeps_to_settle(self.per_loop, pattern.loops_per_sweep)

    def value(self, pattern: Pattern) -> float:
        """The hit ratio a cell is judged on: steady-state object ratio (scheduler), byte ratio
        (weighted), object ratio (unit weights)."""
        if pattern.is_scheduler:
            return 1.0 - self.steady / pattern.loop_len
        return self.byte_ratio if pattern.weighted else self.object_ratio


# -- columns ----------------------------------------------------------------------------------------
class Replays:
    """One pattern's shared state for all columns: its libCacheSim trace file, written once."""

    def __init__(self, pattern: Pattern) -> None:
        self.pattern = pattern

    @cached_property
    def oracle(self) -> libcachesim_ref.OracleTrace:
        return libcachesim_ref.OracleTrace(self.pattern.trace)

    def close(self) -> None:
        if "oracle" in self.__dict__:
            self.oracle.close()


@dataclass(frozen=True)
class Column:
    """A column of the matrix: ``run(replays, budget) -> Outcome``. ``kind``: "ours" columns can be
    judged against the targets; "lru" columns are the LRU the targets compare to; "wtinylfu" is
    libCacheSim's W-TinyLFU; "offline" is the clairvoyant reference."""

    name: str
    run: Callable[[Replays, int], Outcome] = field(compare=False)
    kind: str = ""


def ours_column(policy: str | None = None) -> Column:
    """``ByteCache`` with ``policy`` (default: the library's default), given the pattern's TTL."""
    name = f"ours ({DEFAULT_POLICY}, default)" if policy is None else f"ours {policy}"
    chosen = DEFAULT_POLICY if policy is None else policy

    def run(r: Replays, budget: int) -> Outcome:
        p = r.pattern
        if p.ttl is None:
            return Outcome.from_hits(p, replay_hits(p.trace, lambda: ByteCache(budget, policy=chosen)))
        clock = Ticks()
        make = lambda: ByteCache(budget, policy=chosen, ttl=p.ttl, timer=clock)  # noqa: E731
        return Outcome.from_hits(p, replay_hits(p.trace, make, ticks=clock))

    return Column(name, run, "ours" if chosen != "lru" else "lru")


def _cachetools_lru(r: Replays, budget: int) -> Outcome:
    hits = replay_hits(r.pattern.trace, lambda: cachetools.LRUCache(budget, getsizeof=weight_of))
    return Outcome.from_hits(r.pattern, hits, note="no TTL" if r.pattern.ttl else "")


def libcachesim_column(policy: str) -> Column:
    """libCacheSim's ``policy`` (a key of ``libcachesim_ref.POLICIES``), capacity in bytes/entries."""

    def run(r: Replays, budget: int) -> Outcome:
        p = r.pattern
        note = "no TTL" if p.ttl else ""
        if p.is_scheduler:
            per_loop = r.oracle.misses_per_chunk(policy, budget, p.loop_len)
            hits = len(p.trace) - sum(per_loop)
            obj = hits / len(p.trace)
            return Outcome(obj, obj, per_loop, note=note)  # (byte ratio not kept per chunk)
        obj, byte = r.oracle.run(policy, budget)
        return Outcome(obj, byte, note=note)

    kind = {"LRU": "lru", "W-TinyLFU": "wtinylfu"}.get(policy, "")
    return Column(f"libCacheSim {policy}", run, kind)


def _offline(r: Replays, budget: int) -> Outcome:
    """Unit weights: Belady with bypass (the exact optimum). Scheduler: the better steady state of
    Belady and Belady-Size. Weighted: the better of the two per ratio, and the PFOO-U bound."""
    p = r.pattern
    if not p.weighted:
        return Outcome.from_hits(p, offline.belady_hits(p.trace, budget))
    a = Outcome.from_hits(p, offline.belady_hits(p.trace, budget))
    b = Outcome.from_hits(p, offline.belady_size_hits(p.trace, budget))
    if p.is_scheduler:
        return a if a.steady <= b.steady else b
    return Outcome(max(a.object_ratio, b.object_ratio), max(a.byte_ratio, b.byte_ratio),
                   bound=offline.upper_bound(p.trace, budget))


OFFLINE = Column("offline", _offline, "offline")
COLUMNS = [
    ours_column(),
    ours_column("lru"),
    Column("cachetools LRU", _cachetools_lru, "lru"),
    *(libcachesim_column(p) for p in ("LRU", "W-TinyLFU", "LIRS", "ARC", "S3-FIFO")),
    OFFLINE,
]


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class Cell:
    pattern: Pattern
    fraction: float
    budget: int
    outcomes: dict[str, Outcome]  # column name -> outcome


def run_matrix(patterns: Sequence[Pattern], budgets: Sequence[float] = BUDGETS,
               columns: Sequence[Column] = COLUMNS, progress: Callable[[str], None] | None = None) -> list[Cell]:
    """Every column at every budget (a share of the working set) on every pattern."""
    cells = []
    for p in patterns:
        r = Replays(p)
        try:
            for fraction in budgets:
                budget = max(1, int(fraction * p.working_set))
                cells.append(Cell(p, fraction, budget, {c.name: c.run(r, budget) for c in columns}))
                if progress:
                    progress(f"{p.name} {fraction:.0%}")
        finally:
            r.close()
    return cells


# -- targets ----------------------------------------------------------------------------------------
# code -> what is checked; the scheduler-only ones apply to patterns with loops
TARGETS = {
    "A": "ours >= max(LRU, libCacheSim W-TinyLFU) - 2 points",
    "B": "ours >= 0.9 x offline where LRU < 10%",
    "C": "scheduler: misses/loop <= LRU's",
    "D": "scheduler: misses/loop <= 1.15 x offline at budgets >= 25%",
    "E": "scheduler: settled within 2 sweeps",
}
_EPS = 1e-9


def _of_kind(cell: Cell, columns: Sequence[Column], kind: str) -> list[Outcome]:
    return [cell.outcomes[c.name] for c in columns if c.kind == kind and c.name in cell.outcomes]


def judge(cell: Cell, subject: str, columns: Sequence[Column]) -> dict[str, bool]:
    """Target code -> met?, for column ``subject`` in ``cell`` (only the targets that apply)."""
    p = cell.pattern
    ours = cell.outcomes[subject]
    lrus = _of_kind(cell, columns, "lru")
    rivals = lrus + _of_kind(cell, columns, "wtinylfu")
    opt = cell.outcomes.get(OFFLINE.name)
    out: dict[str, bool] = {}
    if rivals:
        out["A"] = ours.value(p) >= max(o.value(p) for o in rivals) - 0.02 - _EPS
    if lrus and opt is not None and max(o.value(p) for o in lrus) < 0.10:
        out["B"] = ours.value(p) >= 0.9 * opt.value(p) - _EPS
    if p.is_scheduler:
        if lrus:
            out["C"] = ours.steady <= min(o.steady for o in lrus) + _EPS
        if opt is not None and cell.fraction >= 0.25:
            out["D"] = ours.steady <= 1.15 * opt.steady + _EPS
        out["E"] = ours.settle(p) <= 2
    return out


def subjects(columns: Sequence[Column]) -> list[str]:
    return [c.name for c in columns if c.kind == "ours"]


# -- output -----------------------------------------------------------------------------------------
def _fmt(p: Pattern, o: Outcome, scheduler_settle: bool = True) -> str:
    if p.is_scheduler:
        text = f"{o.steady:.1f}" + (f" ({o.settle(p)})" if scheduler_settle else "")
    else:
        text = f"{100 * o.value(p):.1f}"
        if o.bound is not None:
            text += f" (≤{100 * (o.bound[1] if p.weighted else o.bound[0]):.1f})"
    return text + (f" [{o.note}]" if o.note else "")


def format_table(cells: Sequence[Cell], columns: Sequence[Column] = COLUMNS) -> str:
    names = [c.name for c in columns]
    judged = subjects(columns)
    lines = ["| pattern | budget | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    current = None
    for cell in cells:
        p = cell.pattern
        if p is not current:
            current = p
            unit = "" if p.weighted else " entries"
            ws = f"{p.working_set / MB:,.1f} MB" if p.weighted else f"{p.working_set:,} entries"
            lines.append(f"| **{p.name}** | **{p.metric}** | {p.note}; working set {ws}{unit and ''} |"
                         + " |" * (len(names) - 1))
        row = []
        for c in columns:
            o = cell.outcomes[c.name]
            text = _fmt(p, o, scheduler_settle=c.kind != "offline")
            if c.name in judged:
                lost = [k for k, ok in judge(cell, c.name, columns).items() if not ok]
                if lost:
                    text = f"**{text}** ✗{','.join(lost)}"
            row.append(text)
        lines.append(f"| {p.name} | {cell.fraction:.0%} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def format_summary(cells: Sequence[Cell], columns: Sequence[Column] = COLUMNS) -> str:
    lines = []
    for subject in subjects(columns):
        for code, text in TARGETS.items():
            verdicts = [(cell, v[code]) for cell in cells if code in (v := judge(cell, subject, columns))]
            if not verdicts:
                continue
            lost = [f"{cell.pattern.name}@{cell.fraction:.0%}" for cell, ok in verdicts if not ok]
            met = len(verdicts) - len(lost)
            lines.append(f"- {subject}, {code} ({text}): met in {met}/{len(verdicts)} cells"
                         + (f"; lost: {', '.join(lost)}" if lost else ""))
    return "\n".join(lines)


def plot(cells: Sequence[Cell], path: str, columns: Sequence[Column] = COLUMNS) -> None:
    """One panel per pattern: the judged hit ratio against the budget, one line per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patterns: list[Pattern] = []
    for cell in cells:
        if not any(cell.pattern is q for q in patterns):
            patterns.append(cell.pattern)
    ncols = min(4, len(patterns))
    nrows = -(-len(patterns) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows), squeeze=False)
    for ax, p in zip(axes.flat, patterns):
        mine = [c for c in cells if c.pattern is p]
        xs = [100 * c.fraction for c in mine]
        for col in columns:
            ys = [100 * c.outcomes[col.name].value(p) for c in mine]
            style = {"offline": dict(color="black", linestyle="--"), "ours": dict(linewidth=2.2)}.get(col.kind, {})
            ax.plot(xs, ys, marker=".", label=col.name, **style)
        ax.set_title(p.name + (" (steady obj.)" if p.is_scheduler else f" ({p.metric.split()[0]})"), fontsize=9)
        ax.set_xlabel("budget, % of working set", fontsize=8)
        ax.set_ylabel("hit %", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(patterns):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) > 5), 1, 1))
    fig.savefig(path, dpi=70)
    plt.close(fig)


LEGEND = """Cells: scheduler rows, steady-state misses per loop (second half of the loops) and, in
brackets, sweeps before it settles within 5% (or 0.1 misses/loop) of that (offline: misses/loop of
the better of Belady and Belady-Size); other rows, hit % (byte
hit % for weighted traces, object hit % for unit weights); offline on weighted rows: the better of
Belady and Belady-Size, in brackets the PFOO-U upper bound. [no TTL]: the policy has no idle TTL,
replayed without one. Bold with ✗ and target codes: a target the judged column misses there."""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller traces (< 1 minute)")
    ap.add_argument("--only", default="", help="comma-separated pattern name prefixes, e.g. sched-700,zipf")
    ap.add_argument("--budgets", default="", help="comma-separated percentages of the working set, e.g. 10,60")
    ap.add_argument("--policy", action="append", default=[], choices=sorted(POLICIES),
                    help="add a column for this bytecache policy, judged like the default (repeatable)")
    ap.add_argument("--plot", default=os.path.join(HERE, "matrix.png"), help="where to write the plot")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    try:
        budgets = [float(b) / 100 for b in args.budgets.split(",") if b.strip()] or list(BUDGETS)
    except ValueError:
        ap.error(f"--budgets must be comma-separated percentages, got {args.budgets!r}")
    if any(b <= 0 for b in budgets):
        ap.error(f"--budgets must be positive percentages, got {args.budgets!r}")
    columns = list(COLUMNS)
    for policy in args.policy:
        if all(c.name != ours_column(policy).name for c in columns):
            columns.insert(1, ours_column(policy))
    t0 = time.monotonic()
    try:
        patterns = build_patterns(args.quick, [o.strip() for o in args.only.split(",") if o.strip()])
    except ValueError as e:
        ap.error(str(e))
    cells = run_matrix(patterns, budgets, columns,
                       progress=lambda s: print(f"  {time.monotonic() - t0:5.0f} s  {s}", file=sys.stderr))
    print(format_table(cells, columns))
    print()
    print(LEGEND)
    print()
    print("Targets (" + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()) + "):")
    print()
    print(format_summary(cells, columns))
    if not args.no_plot:
        plot(cells, args.plot, columns)
    import libcachesim

    cmd = " ".join(["python -m benchmarks.matrix", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n`{cmd}`: cachetools {cachetools.__version__}, libcachesim {libcachesim.__version__}, "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {time.monotonic() - t0:.0f} s"
          + ("" if args.no_plot else f"; plot: {os.path.relpath(args.plot, ROOT)}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
