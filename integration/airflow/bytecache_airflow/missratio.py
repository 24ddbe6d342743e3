"""A miss-ratio curve from a recorded scheduler trace: what each budget would cost in misses per
scheduler loop and in deserialization time, for bytecache and for Airflow's entry-counted LRU.

The trace (``bytecache_airflow.trace``, recorded by the soak or ``profiling.bootstrap``) is
replayed lookup by lookup through

* ``bytecache.ByteCache`` with its default policy, at budgets that are fractions of the trace's
  true working set, each version charged the weight the bag recorded for it;
* ``cachetools.LRUCache`` of 128, 256, 512 and 1,024 entries -- Airflow 3.3's scheduler cache is
  that class at 512 -- with the bytes its entries weigh (its memory: it does not count bytes).

A miss costs the version's recorded load time (the mean of the lookups that loaded it in the
recorded run: DB read, deserialization, weighing) or, for a version the recorded run never
loaded, the trace's measured cost per byte times its weight. Figures are for the loops after the
warm-up (default: the first third of the loops, which start from an empty cache). The idle TTL
is not replayed (the scheduler comes back to a version within a sweep, far inside an hour).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bytecache.sizes import format_size

from bytecache_airflow.trace import Trace, quantile, true_working_set

__all__ = ["CurvePoint", "MissRatioCurve", "miss_ratio_curve", "format_curve", "plot_curve"]

FRACTIONS = (0.1, 0.25, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0)
LRU_ENTRIES = (128, 256, 512, 1024)


@dataclass(frozen=True)
class CurvePoint:
    cache: str  # "bytecache" or "airflow-lru"
    setting: str  # "60% of the working set" / "512 entries"
    memory_bytes: int  # the budget (bytecache) or the peak bytes held after the warm-up (LRU)
    misses_per_loop: float
    deserialize_s_per_min: float
    hit_ratio: float


@dataclass(frozen=True)
class MissRatioCurve:
    lookups: int
    loops: int
    warmup_loops: int
    seconds: float  # after the warm-up
    working_set_bytes: int  # median over the loops after the warm-up
    working_set_entries: int
    recorded_misses_per_loop: float  # what the recorded run itself missed after the warm-up
    cost_source: str  # how a miss's deserialization time was found
    points: tuple[CurvePoint, ...]

    def to_dict(self) -> dict:
        return asdict(self)


class _CostModel:
    """Milliseconds a miss of each version costs: its recorded load time, else per byte."""

    def __init__(self, trace: Trace) -> None:
        loads: dict[str, list[float]] = {}
        weights: dict[str, int] = {}
        for a in trace.accesses:
            weights[a.key] = a.weight
            if a.load_ms is not None:
                loads.setdefault(a.key, []).append(a.load_ms)
        loaded_bytes = sum(weights[k] * len(v) for k, v in loads.items())
        total_ms = sum(sum(v) for v in loads.values())
        self.ms_per_byte = total_ms / loaded_bytes if loaded_bytes else 0.0
        self.by_key = {k: sum(v) / len(v) for k, v in loads.items()}
        self.estimated = len(set(weights) - set(self.by_key))
        self.source = (
            f"the recorded load time of {len(self.by_key)} of {len(weights)} versions"
            f" (mean {total_ms / max(1, sum(len(v) for v in loads.values())):.1f} ms per load)"
            + (f"; {self.ms_per_byte * 2**20:.1f} ms per MiB of weight for the other {self.estimated}" if self.estimated else "")
        )

    def __call__(self, key: str, weight: int) -> float:
        ms = self.by_key.get(key)
        return ms if ms is not None else weight * self.ms_per_byte


class _ByteCountingLRU:
    """Airflow's cache (``cachetools.LRUCache`` counting entries), and the bytes its entries weigh."""

    def __init__(self, entries: int) -> None:
        import cachetools

        outer = self

        class LRU(cachetools.LRUCache):
            def popitem(self):
                key, weight = super().popitem()
                outer.bytes -= weight
                return key, weight

        self.cache = LRU(maxsize=entries)
        self.bytes = 0

    def hit(self, key: str, weight: int) -> bool:
        if self.cache.get(key) is not None:
            return True
        self.cache[key] = weight
        self.bytes += weight
        return False


class _Budgeted:
    """bytecache at a byte budget, every version charged its recorded weight."""

    def __init__(self, budget: int) -> None:
        from bytecache import ByteCache

        self.cache = ByteCache(budget)

    @property
    def bytes(self) -> int:
        return self.cache.currsize

    def hit(self, key: str, weight: int) -> bool:
        if self.cache.get(key) is not None:
            return True
        try:
            self.cache.set(key, True, weight=weight)
        except ValueError:  # heavier than the whole budget: served, not cached (the bag does the same)
            pass
        return False


def _replay(trace: Trace, cache, warmup_loops: int, cost: _CostModel) -> tuple[int, int, float, int]:
    """(lookups, misses, deserialization ms, peak bytes held) after the warm-up."""
    lookups = misses = peak = 0
    ms = 0.0
    for a in trace.accesses:
        hit = cache.hit(a.key, a.weight)
        if a.loop <= warmup_loops:
            continue
        lookups += 1
        peak = max(peak, cache.bytes)
        if not hit:
            misses += 1
            ms += cost(a.key, a.weight)
    return lookups, misses, ms, peak


def miss_ratio_curve(
    trace: Trace, *, warmup_loops: int | None = None, fractions=FRACTIONS, lru_entries=LRU_ENTRIES
) -> MissRatioCurve:
    if not trace.timed:
        raise ValueError(
            "the trace has no times and loop numbers (recorded before they were added); record a new one "
            "(the soak's --trace, or BYTECACHE_PROFILE_TRACE with profiling.bootstrap)"
        )
    first = min(a.loop for a in trace.accesses)
    last = max(a.loop for a in trace.accesses)
    warmup = first - 1 + (last - first + 1) // 3 if warmup_loops is None else warmup_loops
    steady = [a for a in trace.accesses if a.loop > warmup]
    if not steady:
        raise ValueError(f"no lookups after the warm-up ({warmup} loops); the trace spans loops {first}-{last}")
    loops = last - warmup
    minutes = max(steady[-1].t - steady[0].t, 1e-9) / 60.0
    # the working set at the end of every loop after the warm-up (the last lookup of each loop)
    ends: dict[int, float] = {}
    for a in steady:
        ends[a.loop] = a.t
    truth = true_working_set(trace.accesses, list(ends.values()))
    ws_bytes = int(quantile([s.bytes for s in truth], 0.5))
    ws_entries = int(quantile([s.entries for s in truth], 0.5))
    cost = _CostModel(trace)
    recorded = sum(a.load_ms is not None for a in steady)
    points = []
    for fraction in fractions:
        budget = max(1, int(ws_bytes * fraction))
        n, misses, ms, _ = _replay(trace, _Budgeted(budget), warmup, cost)
        points.append(CurvePoint("bytecache", f"{fraction:.0%} of the working set", budget, misses / loops,
                                 ms / 1000.0 / minutes, 1 - misses / n))
    for entries in lru_entries:
        n, misses, ms, peak = _replay(trace, _ByteCountingLRU(entries), warmup, cost)
        points.append(CurvePoint("airflow-lru", f"{entries} entries", peak, misses / loops, ms / 1000.0 / minutes,
                                 1 - misses / n))
    return MissRatioCurve(
        lookups=len(trace.accesses),
        loops=last - first + 1,
        warmup_loops=warmup - first + 1,
        seconds=minutes * 60.0,
        working_set_bytes=ws_bytes,
        working_set_entries=ws_entries,
        recorded_misses_per_loop=recorded / loops,
        cost_source=cost.source,
        points=tuple(points),
    )


def format_curve(curve: MissRatioCurve) -> str:
    lines = [
        f"Miss-ratio curve: {curve.lookups} lookups over {curve.loops} scheduler loops; figures for the "
        f"{curve.loops - curve.warmup_loops} loops ({curve.seconds:.0f} s) after a {curve.warmup_loops}-loop warm-up",
        f"True working set (sweep window, median over those loops): {format_size(curve.working_set_bytes)} "
        f"in {curve.working_set_entries} DAG versions; the recorded run missed {curve.recorded_misses_per_loop:.1f} per loop",
        f"Deserialization time per miss: {curve.cost_source}",
        "",
        "| cache | memory | misses / loop | deserialization s / min | hit ratio |",
        "|---|---|---|---|---|",
    ]
    for p in curve.points:
        name = "bytecache (default policy), budget" if p.cache == "bytecache" else "Airflow LRU,"
        memory = format_size(p.memory_bytes) + (" (peak held)" if p.cache == "airflow-lru" else "")
        lines.append(f"| {name} {p.setting} | {memory} | {p.misses_per_loop:.1f} | {p.deserialize_s_per_min:.2f} | {p.hit_ratio:.2f} |")
    return "\n".join(lines)


def plot_curve(curve: MissRatioCurve, path, title: str = "") -> None:
    """Misses per loop and deserialization time per minute against memory, one png."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("--plot needs matplotlib (pip install matplotlib), or pass --no-plot") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mib = 2**20
    ours = [p for p in curve.points if p.cache == "bytecache"]
    lru = [p for p in curve.points if p.cache == "airflow-lru"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    for ax, field, label in ((axes[0], "misses_per_loop", "misses per scheduler loop"),
                             (axes[1], "deserialize_s_per_min", "deserialization s per minute")):
        ax.plot([p.memory_bytes / mib for p in ours], [getattr(p, field) for p in ours], "o-", label="bytecache (budget)")
        ax.plot([p.memory_bytes / mib for p in lru], [getattr(p, field) for p in lru], "s", color="tab:red",
                label="Airflow LRU (peak bytes held)")
        labels: dict[tuple, list[str]] = {}  # LRU sizes that hold the same and miss the same share one label
        for p in lru:
            labels.setdefault((p.memory_bytes / mib, getattr(p, field)), []).append(p.setting.split()[0])
        for xy, sizes in labels.items():
            ax.annotate("/".join(sizes), xy, textcoords="offset points", xytext=(4, 4), fontsize=7, color="tab:red")
        ax.axvline(curve.working_set_bytes / mib, ls="--", color="gray", lw=1, label="true working set")
        ax.set_xlabel("memory for DAGs, MiB")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

