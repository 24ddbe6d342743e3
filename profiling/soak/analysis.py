"""The soak's statistics and its verdict: pure functions of the records, no I/O.

The criterion is stated once, here (:data:`CRITERION`), and the verdict, the summary and the
README all use it:

* the **bound**: over the judged window (each run after its warm-up), the scheduler's RSS above
  the reference run's -- the same scheduler on the same workload with (almost) no DAG cache --
  is at most ``BOUND_FACTOR`` x the budget. "RSS above the reference" compares the two runs'
  distributions, not two single samples: the ``LEVEL_QUANTILE`` quantile of each run's RSS
  samples in its window, with a moving-block bootstrap confidence interval for the difference;
* the **trend**: the slope of RSS over the judged window, fitted on block means, less the
  reference run's own slope when that is positive, is not significantly above its limit (its
  confidence interval reaches down to it). The limit is ``SLOPE_FRACTION`` of the budget per
  hour; a window shorter than ``LONG_WINDOW_S`` cannot resolve that from allocator steps, so
  there the limit is the rate that would use up the bound's headroom over the budget
  (``BOUND_FACTOR - 1`` x the budget) within the window, if that is higher.

Three outcomes, each with its reason (:func:`judge`):

* ``growing``: the whole confidence interval of RSS above the reference is over the bound; or the
  slope's interval is above the limit, and either the window is long enough (``LONG_WINDOW_S``)
  that this is not the end of the warm-up, or at the interval's low end another window of the
  same length would carry RSS past the bound;
* ``flat``: the whole interval is within the bound and the slope is not significantly above
  its limit;
* ``inconclusive``: anything else -- too few samples or scheduler loops after the warm-up, an
  interval that straddles the bound, or a short window in which RSS is still rising significantly
  faster than the limit.

A soak without a reference run (the default before Airflow 3.3; 3.1's bag has no entry cap to
set to 1 at all) cannot tell the scheduler's own memory from the cache's, nor judge the bound. Such a
run is judged on its trend alone (:data:`CRITERION_WITHOUT_REFERENCE`): its own slope, nothing
subtracted, against the long-window limit, and only over a window of at least ``LONG_WINDOW_S``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import mean

from profiling.units import MiB, mib

BOUND_FACTOR = 1.25
SLOPE_FRACTION = 0.01  # of the budget, per hour
LEVEL_QUANTILE = 0.9
CONFIDENCE = 0.95
BLOCKS = 8  # the judged window is cut into this many blocks, whose means the slope is fitted on
MIN_BLOCK_S, MAX_BLOCK_S = 2.0, 60.0
MIN_BLOCKS = 4  # fewer blocks after the warm-up: too short to judge
MIN_WINDOW_S = 20.0
MIN_JUDGED_LOOPS = 3  # scheduler loops after the warm-up (when the record has loop times)
LONG_WINDOW_S = 15 * 60.0
BOOTSTRAP_BLOCK_S = 30.0
BOOTSTRAP_ROUNDS = 400

CRITERION = (
    f"flat: after the warm-up, the scheduler's RSS above the reference run's (their "
    f"{round(100 * LEVEL_QUANTILE)}th percentiles, {round(100 * CONFIDENCE)}% confidence interval) stays within "
    f"{BOUND_FACTOR:g} × the budget, and its slope (less the reference's) is not significantly above the limit: "
    f"{100 * SLOPE_FRACTION:g}% of the budget per hour, or, in a window under {LONG_WINDOW_S / 60:.0f} minutes, the rate "
    f"that would use the bound's {BOUND_FACTOR - 1:g} × budget of headroom within the window if that is higher; "
    f"growing: the interval lies above {BOUND_FACTOR:g} × the budget, or the slope is significantly above its limit "
    f"and either the window is at least {LONG_WINDOW_S / 60:.0f} minutes long or, at the low end of its interval, "
    f"another window of the same length would carry RSS past the bound; inconclusive: anything else, with the reason."
)

CRITERION_WITHOUT_REFERENCE = (
    f"without a reference run (Airflow before 3.3), the trend alone: flat: over a window of at least "
    f"{LONG_WINDOW_S / 60:.0f} minutes after the warm-up, the run's own RSS slope (nothing subtracted) is not "
    f"significantly above {100 * SLOPE_FRACTION:g}% of the budget per hour; growing: it is significantly above; "
    f"inconclusive: a shorter window; the level above the scheduler's own memory is reported, not judged."
)


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float

    def fmt(self, scale: float = 1.0, digits: int = 1) -> str:
        return f"{self.value / scale:.{digits}f} [{self.lo / scale:.{digits}f}, {self.hi / scale:.{digits}f}]"


# -- small statistics ---------------------------------------------------------------------------
def quantile(xs: list[float], q: float) -> float:
    """The ``q`` quantile by linear interpolation between order statistics; NaN for no data."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def fit_slope(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` against ``ts``; 0 for fewer than two distinct ``ts``."""
    n = len(ts)
    if n < 2:
        return 0.0
    mt, my = sum(ts) / n, sum(ys) / n
    sxx = sum((t - mt) ** 2 for t in ts)
    if sxx == 0:
        return 0.0
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / sxx


_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile (table, rounded down to the nearest listed dof)."""
    if dof < 1:
        return math.inf
    return _T95[max(k for k in _T95 if k <= dof)] if dof < 1000 else 1.960


def block_means(points: list[tuple[float, float]], start: float, block_s: float) -> list[tuple[float, float]]:
    """(mean t, mean y) over consecutive ``block_s`` blocks of the points at t >= ``start``."""
    blocks: dict[int, list[tuple[float, float]]] = {}
    for t, y in points:
        if t >= start:
            blocks.setdefault(int((t - start) // block_s), []).append((t, y))
    return [(mean(t for t, _ in v), mean(y for _, y in v)) for _, v in sorted(blocks.items())]


def block_seconds(window_s: float) -> float:
    """Block length for a judged window: ``BLOCKS`` blocks, each 2 s to a minute long."""
    return min(MAX_BLOCK_S, max(MIN_BLOCK_S, window_s / BLOCKS))


def slope_estimate(points: list[tuple[float, float]], start: float) -> Estimate | None:
    """Slope of y per hour over the points after ``start``, with a 95% interval.

    Fitted on block means (:func:`block_seconds`): per-second samples are far from independent
    (one collection cycle spans many of them), block means much less so. None for a window under
    ``MIN_WINDOW_S`` or fewer than ``MIN_BLOCKS`` blocks."""
    window = [t for t, _ in points if t >= start]
    if not window or window[-1] - start < MIN_WINDOW_S:
        return None
    blocks = block_means(points, start, block_seconds(window[-1] - start))
    if len(blocks) < MIN_BLOCKS:
        return None
    ts = [t / 3600.0 for t, _ in blocks]
    ys = [y for _, y in blocks]
    b = fit_slope(ts, ys)
    mt, my = mean(ts), mean(ys)
    resid = sum((y - (my + b * (t - mt))) ** 2 for t, y in zip(ts, ys))
    sxx = sum((t - mt) ** 2 for t in ts)
    se = math.sqrt(resid / (len(ts) - 2) / sxx)
    half = t95(len(ts) - 2) * se
    return Estimate(b, b - half, b + half)


def _block_resample(xs: list[float], block: int, rng: random.Random) -> list[float]:
    """A moving-block bootstrap resample of ``xs`` (same length; blocks keep autocorrelation).
    A short series gets blocks of at most a fifth of its length, so resamples still differ."""
    n = len(xs)
    block = max(1, min(block, n // 5))
    out: list[float] = []
    while len(out) < n:
        i = rng.randrange(n - block + 1)
        out.extend(xs[i : i + block])
    return out[:n]


def quantile_difference(a: list[float], b: list[float], q: float = LEVEL_QUANTILE, block: int = 30,
                        rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> Estimate | None:
    """quantile(a) - quantile(b) with a 95% moving-block bootstrap interval; deterministic (seeded)."""
    if not a or not b:
        return None
    rng = random.Random(seed)
    diffs = sorted(quantile(_block_resample(a, block, rng), q) - quantile(_block_resample(b, block, rng), q) for _ in range(rounds))
    tail = (1 - CONFIDENCE) / 2
    return Estimate(quantile(a, q) - quantile(b, q), quantile(diffs, tail), quantile(diffs, 1 - tail))


# -- one run -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunStats:
    """What the verdict and the reports need from one run, in bytes and seconds."""

    name: str
    samples: int
    window_s: float  # the judged window: from the warm-up's end to the last sample
    warmup: float
    baseline: int | None  # RSS after the scheduler's first loop
    peak: int | None
    level: float | None  # LEVEL_QUANTILE of RSS in the window
    pss_level: float | None
    uss_level: float | None
    slope: Estimate | None  # bytes per hour
    window_rss: tuple[float, ...]  # the window's RSS samples, for comparing distributions
    load_mean: float | None  # the machine's mean 1-minute load during the run
    load_max: float | None
    loops_judged: int | None  # scheduler loops finished after the warm-up (None: not recorded)


def run_stats(run) -> RunStats:
    """:class:`RunStats` of a :class:`profiling.soak.model.RunRecord`."""
    s = run.samples
    window = [x for x in s if x.t >= run.warmup]
    first_loop = (run.scheduler.get("first_loop") or {}).get("rss")
    return RunStats(
        name=run.name,
        samples=len(s),
        window_s=(window[-1].t - run.warmup) if window else 0.0,
        warmup=run.warmup,
        baseline=first_loop,
        peak=max((x.rss for x in s), default=None),
        level=quantile([x.rss for x in window], LEVEL_QUANTILE) if window else None,
        pss_level=quantile([x.pss for x in window], LEVEL_QUANTILE) if window else None,
        uss_level=quantile([x.uss for x in window], LEVEL_QUANTILE) if window else None,
        slope=slope_estimate([(x.t, x.rss) for x in s], run.warmup),
        window_rss=tuple(x.rss for x in window),
        load_mean=mean(x.load1 for x in s) if s else None,
        load_max=max((x.load1 for x in s), default=None),
        loops_judged=sum(1 for t in run.loop_times if t >= run.warmup) if run.loop_times else None,
    )


# -- the verdict ----------------------------------------------------------------------------------
FLAT, GROWING, INCONCLUSIVE = "flat", "growing", "inconclusive"


@dataclass(frozen=True)
class Verdict:
    outcome: str
    reason: str
    subject: str
    budget: int
    bound: float  # bytes
    excess: Estimate | None  # RSS above the reference, bytes
    slope: Estimate | None  # bytes per hour, less the reference's (when positive)
    slope_limit: float  # bytes per hour
    window_s: float

    def line(self) -> str:
        parts = [f"{self.subject}: {self.outcome}"]
        if self.excess is not None:
            parts.append(f"RSS above the reference {self.excess.fmt(MiB)} MiB vs bound {mib(self.bound)} MiB "
                         f"({BOUND_FACTOR:g} × budget {mib(self.budget)} MiB)")
        if self.slope is not None:
            parts.append(f"slope {self.slope.fmt(MiB)} MiB/h vs limit {self.slope_limit / MiB:.2f} MiB/h")
        parts.append(f"over {self.window_s:.0f} s after warm-up")
        return f"{parts[0]} ({'; '.join(parts[1:])}) -- {self.reason}"


def slope_limit(budget: int, window_s: float) -> float:
    """Bytes per hour: 1% of the budget, or in a short window the headroom's worth over the window."""
    limit = SLOPE_FRACTION * budget
    if 0 < window_s < LONG_WINDOW_S:
        limit = max(limit, (BOUND_FACTOR - 1) * budget / (window_s / 3600.0))
    return limit


def judge(subject: RunStats, reference: RunStats | None, budget: int) -> Verdict:
    """The verdict on ``subject`` by :data:`CRITERION`, against the ``reference`` run."""
    bound = BOUND_FACTOR * budget
    limit = slope_limit(budget, subject.window_s)

    def verdict(outcome: str, reason: str, excess=None, slope=None) -> Verdict:
        return Verdict(outcome, reason, subject.name, budget, bound, excess, slope, limit, subject.window_s)

    if reference is None or not reference.window_rss:
        return judge_trend_alone(subject, budget)
    few = [st for st in (subject, reference) if st.loops_judged is not None and st.loops_judged < MIN_JUDGED_LOOPS]
    if few:
        return verdict(INCONCLUSIVE, f"too short: the {few[0].name} run finished {few[0].loops_judged} scheduler loops "
                                     f"after its warm-up, under {MIN_JUDGED_LOOPS}")
    if subject.slope is None or reference.slope is None:
        short = subject.name if subject.slope is None else reference.name
        return verdict(INCONCLUSIVE, f"too short: the {short} run has under {MIN_WINDOW_S:.0f} s of samples after its warm-up")
    excess = quantile_difference(list(subject.window_rss), list(reference.window_rss), block=int(BOOTSTRAP_BLOCK_S))
    ref_slope = max(reference.slope.value, 0.0)
    slope = Estimate(subject.slope.value - ref_slope, subject.slope.lo - ref_slope, subject.slope.hi - ref_slope)
    if excess.lo > bound:
        return verdict(GROWING, "RSS above the reference exceeds the bound (the whole interval)", excess, slope)
    rising = slope.lo > limit
    if rising and subject.window_s >= LONG_WINDOW_S:
        return verdict(GROWING, "RSS is rising significantly faster than the limit", excess, slope)
    if rising and excess.value + slope.lo * subject.window_s / 3600.0 > bound:
        return verdict(GROWING, "RSS is rising so fast that, at the low end of its interval, another window "
                                "of the same length takes it past the bound", excess, slope)
    if excess.hi > bound:
        return verdict(INCONCLUSIVE, "too noisy to tell: the interval of RSS above the reference straddles the bound", excess, slope)
    if rising:
        return verdict(INCONCLUSIVE, f"within the bound but still rising significantly over a window under "
                                     f"{LONG_WINDOW_S / 60:.0f} min: run longer", excess, slope)
    return verdict(FLAT, "within the bound, and not significantly rising", excess, slope)


def judge_trend_alone(subject: RunStats, budget: int) -> Verdict:
    """The verdict on ``subject`` by :data:`CRITERION_WITHOUT_REFERENCE`: no reference run to
    separate the scheduler's own memory from the cache's, so no bound, and no short window."""
    limit = SLOPE_FRACTION * budget

    def verdict(outcome: str, reason: str) -> Verdict:
        return Verdict(outcome, f"no reference run: judged on its trend alone; {reason}", subject.name, budget,
                       BOUND_FACTOR * budget, None, subject.slope, limit, subject.window_s)

    if subject.loops_judged is not None and subject.loops_judged < MIN_JUDGED_LOOPS:
        return verdict(INCONCLUSIVE, f"too short: the run finished {subject.loops_judged} scheduler loops after its "
                                     f"warm-up, under {MIN_JUDGED_LOOPS}")
    if subject.slope is None or subject.window_s < LONG_WINDOW_S:
        return verdict(INCONCLUSIVE, f"too short: the trend alone needs a window of at least {LONG_WINDOW_S / 60:.0f} min")
    if subject.slope.lo > limit:
        return verdict(GROWING, "RSS is rising significantly faster than the limit")
    return verdict(FLAT, "RSS is not significantly rising")


#: The bytes gauge against the object-exact deep walk of what the cache holds, at exit.
ACCOUNTING_BOUND = 0.10


#: The bytes gauge against the scheduler's real memory for the cache: the allocator bytes in use
#: that dropping the whole cache at exit gave back (``profiling.heap.release``).
REAL_MEMORY_BOUND = 0.15


def accounting_error(gauge: float | None, measured: float | None) -> float | None:
    """gauge / measured - 1 (positive: the gauge over-counts); None without both figures."""
    if not gauge or not measured:
        return None
    return gauge / measured - 1


@dataclass(frozen=True)
class Summary:
    """Every run's statistics and, for each configuration other than the reference, its verdict."""

    stats: dict[str, RunStats]
    verdicts: dict[str, Verdict]
    main: Verdict | None  # the bytecache run's: the soak's verdict


def summarize(results) -> Summary:
    """:class:`Summary` of a :class:`profiling.soak.model.SoakResults`."""
    stats = {r.name: run_stats(r) for r in results.runs if r.samples}
    ref = stats.get("reference")
    verdicts = {name: judge(st, ref, results.budget) for name, st in stats.items() if name != "reference"}
    return Summary(stats, verdicts, verdicts.get("bytecache"))


# -- speed and the cache's own cost ---------------------------------------------------------------
@dataclass(frozen=True)
class LoopStats:
    """``scheduler_loop_duration`` of one run, in ms."""

    loops: int
    mean_ms: float
    p50_ms: float
    p95_ms: float


def loop_stats(loop_ms: list[float]) -> LoopStats | None:
    if not loop_ms:
        return None
    return LoopStats(len(loop_ms), mean(loop_ms), quantile(loop_ms, 0.5), quantile(loop_ms, 0.95))


def loop_ratio(subject: LoopStats | None, other: LoopStats | None) -> tuple[float, float] | None:
    """(mean, p50) of ``subject``'s loop duration over ``other``'s; under 1: ``subject`` is faster."""
    if subject is None or other is None or not other.mean_ms or not other.p50_ms:
        return None
    return subject.mean_ms / other.mean_ms, subject.p50_ms / other.p50_ms


@dataclass(frozen=True)
class CacheCost:
    """What the bag and Python's collector spent of the scheduler's wall time, from its exit report.

    ``overhead_s`` is the bag's own total: its collections by wall time (they hold the GIL: the
    scheduler loses all of it), heap trims, calibration and the rest of maintenance by the CPU
    time of the thread that ran them (their wall time on a loaded machine is mostly waiting for
    the GIL or a core); Python's full collections (its own and the bag's) are counted apart."""

    wall_s: float
    overhead_s: float
    collections: int
    collection_s: float
    trim_s: float
    calibration_s: float
    maintenance_s: float
    pause_p50_ms: float | None
    pause_p99_ms: float | None
    pause_max_ms: float | None
    deferred_for_time: int
    python_full_collections: int | None
    python_full_s: float | None

    def share(self, seconds: float | None) -> float | None:
        return None if seconds is None or not self.wall_s else seconds / self.wall_s


def cache_cost(scheduler_report: dict) -> CacheCost | None:
    """The :class:`CacheCost` of a run whose bag reported its reclaim state, else None."""
    reclaim = (scheduler_report.get("snapshot") or {}).get("reclaim") or {}
    wall = scheduler_report.get("uptime_s") or reclaim.get("elapsed_seconds")
    if not reclaim or not wall:
        return None
    pauses = sorted(reclaim.get("pauses_ms") or [])
    full_ms = scheduler_report.get("gc_full_ms")
    return CacheCost(
        wall_s=float(wall),
        overhead_s=float(reclaim.get("overhead_seconds", 0.0)),
        collections=int(reclaim.get("collections", 0)),
        collection_s=float(reclaim.get("collection_seconds", 0.0)),
        trim_s=float(reclaim.get("trim_cpu_seconds", reclaim.get("trim_seconds", 0.0))),
        calibration_s=float(reclaim.get("calibration_seconds", 0.0)),
        maintenance_s=float(reclaim.get("maintenance_seconds", 0.0)),
        pause_p50_ms=quantile(pauses, 0.5) if pauses else None,
        pause_p99_ms=quantile(pauses, 0.99) if pauses else None,
        pause_max_ms=pauses[-1] if pauses else None,
        deferred_for_time=int(reclaim.get("deferred_for_time", 0)),
        python_full_collections=scheduler_report.get("gc_full"),
        python_full_s=None if full_ms is None else full_ms / 1000.0,
    )


# -- peak memory against the bound ------------------------------------------------------------------
def peak_rss(run, within_s: float | None = None) -> int | None:
    """The highest RSS sample of ``run``, or of its first ``within_s`` seconds."""
    return max((s.rss for s in run.samples if within_s is None or s.t <= within_s), default=None)


def peak_excess(subject, reference, *, common_span: bool = False) -> float | None:
    """``subject``'s peak RSS less ``reference``'s, in bytes; with ``common_span`` both over the
    length of the shorter run only (a longer run has more chances to reach a higher peak)."""
    if not subject.samples or not reference.samples:
        return None
    within = min(subject.samples[-1].t, reference.samples[-1].t) if common_span else None
    return peak_rss(subject, within) - peak_rss(reference, within)


@dataclass(frozen=True)
class HeldBytes:
    """The bag's own view of the memory it is responsible for: live (cached) + evicted-uncollected."""

    peak_bytes: int
    peak_budget: int
    ticks: dict[str, int]  # maintenance ticks by (live + uncollected) / budget bucket, upper edges

    @property
    def peak_ratio(self) -> float | None:
        return self.peak_bytes / self.peak_budget if self.peak_budget else None

    def share_above(self, ratio: float) -> float | None:
        """Share of maintenance ticks at which live + uncollected exceeded ``ratio`` × budget
        (``ratio`` must be one of the bucket edges)."""
        total = sum(self.ticks.values())
        if not total:
            return None
        above = sum(n for edge, n in self.ticks.items() if float(edge) > ratio)
        return above / total


def held_bytes(scheduler_report: dict) -> HeldBytes | None:
    reclaim = (scheduler_report.get("snapshot") or {}).get("reclaim") or {}
    if "held_peak_bytes" not in reclaim:
        return None
    return HeldBytes(int(reclaim["held_peak_bytes"]), int(reclaim.get("held_peak_budget") or 0),
                     dict(reclaim.get("held_ticks_by_ratio") or {}))
