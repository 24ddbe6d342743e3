"""Reporters: ``summary.md``, ``rss.csv``/``redeploys.csv`` and ``rss.png`` from the records alone.

Every figure comes from :class:`profiling.soak.model.SoakResults` and
:mod:`profiling.soak.analysis`; nothing here measures, so ``report DIR`` re-renders a saved soak
byte for byte.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from statistics import mean, median

from profiling.soak import analysis
from profiling.soak.analysis import ACCOUNTING_BOUND, CRITERION, REAL_MEMORY_BOUND, CRITERION_WITHOUT_REFERENCE, Summary, accounting_error, quantile
from profiling.soak.model import RunRecord, SoakResults
from profiling.units import MiB, mib

COLORS = {"unbounded": "tab:red", "stock": "tab:orange", "reference": "tab:gray", "bytecache": "tab:blue"}


def _f(x, fmt: str = "{:.1f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}%"


def cache_figures(run: RunRecord) -> dict:
    """The cache's own figures at the scheduler's exit: the gauge, the exact measures, counters."""
    rep = run.scheduler
    snap = rep.get("snapshot") or {}
    deep = rep.get("deep") or {}
    gauge = snap.get("cached_bytes")
    hits, misses, loops = rep.get("hits"), rep.get("misses"), rep.get("loops") or 0
    reclaim = snap.get("reclaim") or {}
    return {
        "entries": rep.get("entries"),
        "gauge": gauge,
        "walk": deep.get("walk_bytes"),
        "pympler": deep.get("pympler_bytes"),
        "err_walk": accounting_error(gauge, deep.get("walk_bytes")),
        "err_pympler": accounting_error(gauge, deep.get("pympler_bytes")),
        **release_figures(rep.get("release")),
        "memray_under_load_path": run.memray.get("retained_under_load_path"),
        "hits": hits,
        "misses": misses,
        "loops": loops,
        "hit_ratio": hits / (hits + misses) if hits is not None and misses is not None and hits + misses else None,
        "misses_per_loop": misses / loops if misses is not None and loops else None,
        "statsd_hits": run.statsd.get("cache_hit"),
        "reclaim": reclaim,
        "ratio": (snap.get("weighing") or {}).get("ratio"),
    }


def release_figures(release: dict | None) -> dict:
    """What dropping the cache at exit gave back (``profiling.cache_contents.cache_release``):
    allocator bytes in use, PSS and RSS, each against the gauge at the drop, and the cached DAGs
    that something else still held (their deep walk: memory the drop could not return)."""
    if not release:
        return {key: None for key in ("drop_gauge", "drop_walk", "heap_released", "pymalloc_released", "malloc_released", "pss_released", "rss_released", "err_heap", "err_pss",
                                      "survivors", "survivor_walk")}
    gauge, survivors = release.get("gauge"), release.get("survivors") or []
    before, collected = release.get("before") or {}, release.get("after_collect") or {}

    def freed(allocator: str) -> int | None:
        return None if before.get(allocator) is None or collected.get(allocator) is None else before[allocator] - collected[allocator]

    return {
        "drop_gauge": gauge,
        "drop_walk": release.get("walk_bytes"),
        "heap_released": release.get("heap_released"),
        "pymalloc_released": freed("pymalloc"),
        "malloc_released": freed("malloc"),
        "pss_released": release.get("pss_released"),
        "rss_released": release.get("rss_released"),
        "err_heap": accounting_error(gauge, release.get("heap_released")),
        "err_pss": accounting_error(gauge, release.get("pss_released")),
        "survivors": len(survivors),
        "survivor_walk": sum(s["walk_bytes"] for s in survivors),
    }


# -- markdown ---------------------------------------------------------------------------------------
def mib_span(runs: list[RunRecord]) -> str:
    """The length of the shortest run with samples, as "N min" (peaks are compared over it)."""
    ends = [r.samples[-1].t for r in runs if r.samples]
    return f"{min(ends) / 60:.1f} min" if ends else "n/a"


def render_markdown(results: SoakResults, summary: Summary) -> str:
    spec, w = results.spec, results.spec.workload
    runs = [r for r in results.runs]
    stats, verdicts = summary.stats, summary.verdicts
    setup = results.setup
    memray = {"off": "off", "default": "on (default mode)", "detailed": "detailed (native + Python allocators)"}[spec.memray]
    lines = [
        f"# Scheduler soak, started {results.started}",
        "",
        f"Command: `{results.command}`",
        "",
        f"Airflow {spec.airflow or 'version not recorded'}.",
        "",
        f"Workload: {w.n_dags} DAGs (seed {w.seed}, size mix {', '.join(f'{k}:{v:g}' for k, v in sorted(w.size_mix.items()))} tasks:weight, "
        f"{setup.get('tasks')} tasks, {mib(setup.get('json_bytes'))} MiB of serialized JSON), {w.runs} running runs "
        f"(default_pool 0 slots), {w.per_tick()} files rewritten every {w.redeploy_interval:g} s; active set ≈ "
        f"{mib(setup.get('active_bytes_estimate'))} MiB deserialized (estimate); budget {mib(results.budget)} MiB; "
        f"`min_serialized_dag_update_interval` {spec.min_update_interval} s; memray {memray}.",
        "",
        "| metric | " + " | ".join(spec.label(r.name) + (f" (from {r.source})" if r.source else "") for r in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]

    def row(label: str, fn) -> None:
        cells = []
        for r in runs:
            st = stats.get(r.name)
            try:
                cells.append(fn(r, st) if st is not None else "n/a")
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def verdict_of(r):
        return verdicts.get(r.name)

    row("run length / warm-up, s; scheduler loops judged", lambda r, st: f"{r.duration:.0f} / {r.warmup:.0f}; {_f(st.loops_judged, '{}')}")
    row("machine load (1-min average) mean / max", lambda r, st: f"{_f(st.load_mean, '{:.1f}')} / {_f(st.load_max, '{:.1f}')}")
    row("RSS after the first loop, MiB", lambda r, st: mib(st.baseline))
    row("peak RSS, MiB", lambda r, st: mib(st.peak))
    row("peak − RSS after the first loop, MiB", lambda r, st: mib(st.peak - st.baseline))
    row(f"RSS p{round(100 * analysis.LEVEL_QUANTILE)} after warm-up, MiB", lambda r, st: mib(st.level))
    row(f"PSS / USS p{round(100 * analysis.LEVEL_QUANTILE)} after warm-up, MiB", lambda r, st: f"{mib(st.pss_level)} / {mib(st.uss_level)}")
    row("RSS above the reference, MiB [95% CI]", lambda r, st: verdict_of(r).excess.fmt(MiB) if verdict_of(r) and verdict_of(r).excess else "n/a")
    row("slope after warm-up, MiB/h [95% CI]", lambda r, st: st.slope.fmt(MiB) if st.slope else "n/a")
    row("verdict", lambda r, st: f"**{verdict_of(r).outcome}**" if verdict_of(r) else "(baseline)")
    row("DAG versions created / redeploy ticks", lambda r, st: f"{r.versions_end - r.versions_start} / {len(r.redeploys)}")
    figs = {r.name: cache_figures(r) for r in runs}
    row("lookups: hits / misses (hit ratio), in-process", lambda r, st: f"{figs[r.name]['hits']} / {figs[r.name]['misses']} ({_f(figs[r.name]['hit_ratio'], '{:.2f}')})")
    row("cache hits received by statsd", lambda r, st: _f(figs[r.name]["statsd_hits"], "{:.0f}"))
    row("scheduler loops; misses per loop", lambda r, st: f"{figs[r.name]['loops']}; {_f(figs[r.name]['misses_per_loop'], '{:.2f}')}")
    row("scheduler_loop_duration mean / p50 / p95, ms",
        lambda r, st: f"{_f(mean(r.loop_ms), '{:.0f}')} / {_f(median(r.loop_ms), '{:.0f}')} / {_f(quantile(r.loop_ms, 0.95), '{:.0f}')}" if r.loop_ms else "n/a")
    row("cache entries at exit", lambda r, st: _f(figs[r.name]["entries"], "{}"))
    row("bytes gauge at exit, MiB", lambda r, st: mib(figs[r.name]["gauge"]))
    row("exact: deep walk of the cached DAGs at exit, MiB", lambda r, st: mib(figs[r.name]["walk"]))
    row("accounting error: gauge vs deep walk", lambda r, st: _pct(figs[r.name]["err_walk"]))
    row("pympler asizeof of the cached DAGs, MiB (gauge vs it)", lambda r, st: f"{mib(figs[r.name]['pympler'])} ({_pct(figs[r.name]['err_pympler'])})" if figs[r.name]["pympler"] else "n/a")
    row("real memory, the cache dropped at exit: gauge / deep walk / allocator bytes in use freed, MiB (gauge vs freed)",
        lambda r, st: f"{mib(figs[r.name]['drop_gauge'])} / {mib(figs[r.name]['drop_walk'])} / {mib(figs[r.name]['heap_released'])} "
                      f"({_pct(figs[r.name]['err_heap'])})" if figs[r.name]["heap_released"] else "n/a")
    row("of those freed: pymalloc (objects up to 512 bytes) / malloc (larger), MiB",
        lambda r, st: f"{mib(figs[r.name]['pymalloc_released'])} / {mib(figs[r.name]['malloc_released'])}"
        if figs[r.name]["heap_released"] else "n/a")
    row("given back to the OS by the drop + malloc_trim: PSS / RSS, MiB (gauge vs PSS)",
        lambda r, st: f"{mib(figs[r.name]['pss_released'])} / {mib(figs[r.name]['rss_released'])} ({_pct(figs[r.name]['err_pss'])})"
        if figs[r.name]["pss_released"] is not None else "n/a")
    row("cached DAGs still held elsewhere after the drop (their deep walk, MiB)",
        lambda r, st: f"{figs[r.name]['survivors']} ({mib(figs[r.name]['survivor_walk'])})" if figs[r.name]["survivors"] is not None else "n/a")
    row("memray default mode: retained under the load path at exit, MiB (arena-granular)", lambda r, st: mib(figs[r.name]["memray_under_load_path"]))
    row("calibrated bytes per JSON byte", lambda r, st: _f(figs[r.name]["ratio"], "{:.2f}"))
    loops = {r.name: analysis.loop_stats(r.loop_ms) for r in runs}

    def vs(r, other: str) -> str:
        ratio = analysis.loop_ratio(loops[r.name], loops.get(other))
        return "n/a" if ratio is None or r.name == other else f"{ratio[0]:.2f} / {ratio[1]:.2f}"

    row("loop duration mean / p50 ÷ the reference's", lambda r, st: vs(r, "reference"))
    row("loop duration mean / p50 ÷ stock's", lambda r, st: vs(r, "stock"))
    costs = {r.name: analysis.cache_cost(r.scheduler) for r in runs}

    def cost(fn):
        return lambda r, st: fn(costs[r.name]) if costs[r.name] is not None else "n/a"

    def share(c, seconds) -> str:
        return f"{100 * c.share(seconds):.2f}%" if c.share(seconds) is not None else "n/a"

    row("the cache's own overhead (collections by wall time + trims, calibration, maintenance by thread CPU time), s; "
        "share of scheduler wall time",
        cost(lambda c: f"{c.overhead_s:.1f} of {c.wall_s:.0f}; {share(c, c.overhead_s)}"))
    row("its collections: count; s; share of wall time; deferred by the caps",
        cost(lambda c: f"{c.collections}; {c.collection_s:.1f}; {share(c, c.collection_s)}; {c.deferred_for_time}"))
    row("its collection pauses p50 / p99 / max, ms",
        cost(lambda c: f"{_f(c.pause_p50_ms, '{:.0f}')} / {_f(c.pause_p99_ms, '{:.0f}')} / {_f(c.pause_max_ms, '{:.0f}')}"))
    row("heap trims s; calibration s; other maintenance s (thread CPU time)",
        cost(lambda c: f"{c.trim_s:.1f}; {c.calibration_s:.1f}; {c.maintenance_s:.1f}"))
    row("all full collections (Python's and the cache's): count; mean, ms; share of wall time",
        lambda r, st: "{}; {:.0f}; {}".format(r.scheduler["gc_full"], r.scheduler["gc_full_ms"] / max(1, r.scheduler["gc_full"]),
                                             f"{100 * r.scheduler['gc_full_ms'] / 1000 / r.scheduler['uptime_s']:.1f}%"))
    ref_run = results.run("reference")
    bound = analysis.BOUND_FACTOR * results.budget if results.budget else None

    def peak_over(r, st) -> str:
        if ref_run is None or r.name == "reference":
            return "n/a"
        whole, common = analysis.peak_excess(r, ref_run), analysis.peak_excess(r, ref_run, common_span=True)
        return f"{mib(whole)} / {mib(common)} vs {mib(bound)}"

    row(f"peak RSS − the reference's peak, MiB: whole runs / first {mib_span(runs)} (the shorter run's length) vs "
        f"{analysis.BOUND_FACTOR:g} × budget", peak_over)

    def held(r, st) -> str:
        h = analysis.held_bytes(r.scheduler)
        if h is None:
            return "n/a"
        above = h.share_above(analysis.BOUND_FACTOR)
        return f"{_f(h.peak_ratio, '{:.2f}')}; {'n/a' if above is None else f'{100 * above:.1f}%'}"

    row(f"live + uncollected (the bag's accounting): peak ÷ budget; share of maintenance ticks above {analysis.BOUND_FACTOR:g} × budget", held)
    lines += [
        "",
        f"Criterion -- {CRITERION}",
        "",
        *([f"Criterion -- {CRITERION_WITHOUT_REFERENCE}", ""] if "reference" not in stats else []),
        f"Accounting: the bytes gauge is compared with the deep walk of the cached DAGs taken inside the scheduler at "
        f"exit (every object reachable from them, each counted once; types, modules, functions and code excluded); "
        f"the bound is ±{100 * ACCOUNTING_BOUND:.0f}%. memray's default mode attributes whole pymalloc arenas to the "
        f"stack that first touched them: its figure is shown for orientation, not as a measure of the cache.",
        "",
        f"Real memory: after the gauge and the deep walk were read, the scheduler drops its whole cache, collects, "
        f"and reads its allocators (pymalloc's allocated blocks + glibc malloc's bytes in use) before and after: the "
        f"difference is the cache's heap footprint, judged against the gauge at ±{100 * REAL_MEMORY_BOUND:.0f}%. "
        f"Then malloc_trim(0): the PSS / RSS difference is what the OS got back; the gap to the heap figure is "
        f"fragmentation (free blocks in pages that still hold live objects).",
        "",
        "Files: `rss.csv`, `redeploys.csv`, `rss.png`, `results.json` (everything above is computed from it: "
        "`python -m profiling.soak report DIR`); per run `scheduler.log`, `dag-processor.log`, `scheduler-report.json`"
        + (", `memray-flamegraph.html`, `memray-flamegraph-leaks.html`, `memray-stats.txt`, `memray-summary.txt`" if spec.memray != "off" else "")
        + ".",
        "",
    ]
    for r in runs:
        if r.error:
            lines.append(f"- {r.name}: ERROR {r.error}")
    for name, v in verdicts.items():
        if name != "bytecache":
            lines.append(f"Beside it, {v.line()}")
            lines.append("")
    if summary.main is not None:
        lines.append(f"Verdict {summary.main.line()}")
    else:
        lines.append("Verdict bytecache: inconclusive -- the bytecache run produced no samples")
    return "\n".join(lines) + "\n"


# -- CSV ------------------------------------------------------------------------------------------
def write_csv(results: SoakResults, out: Path) -> None:
    with open(out / "rss.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["config", "t_s", "rss_bytes", "pss_bytes", "uss_bytes", "load1"])
        for r in results.runs:
            for s in r.samples:
                w.writerow([r.name, *s.row()])
    with open(out / "redeploys.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["config", "t_s"])
        for r in results.runs:
            for t in r.redeploys:
                w.writerow([r.name, t])


# -- plot -------------------------------------------------------------------------------------------
def plot(results: SoakResults, summary: Summary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "bytecache-soak"
    fig, ax = plt.subplots(figsize=(11, 6))
    for r in results.runs:
        if not r.samples:
            continue
        ts = [s.t / 60 for s in r.samples]
        color = COLORS[r.name]
        ax.plot(ts, [s.rss / MiB for s in r.samples], label=f"{results.spec.label(r.name)} RSS", color=color, lw=1.5)
        ax.plot(ts, [s.pss / MiB for s in r.samples], color=color, lw=0.8, ls=":", label=f"{r.name} PSS")
        ax.axvline(r.warmup / 60, color=color, lw=0.6, ls="-.")
    ref = summary.stats.get("reference")
    if ref is not None and ref.level is not None:
        q = round(100 * analysis.LEVEL_QUANTILE)
        ax.axhline(ref.level / MiB, color="tab:gray", lw=0.8, ls="--", label=f"reference p{q} after warm-up")
        ax.axhline((ref.level + results.budget) / MiB, color="tab:green", lw=0.8, ls=":", label=f"+ budget ({mib(results.budget)} MiB)")
        ax.axhline((ref.level + analysis.BOUND_FACTOR * results.budget) / MiB, color="tab:green", lw=1.2, ls="--",
                   label=f"+ {analysis.BOUND_FACTOR:g} × budget: the bound")
    ax.set_xlabel("minutes since scheduler start (dash-dot: each run's warm-up end)")
    ax.set_ylabel("MiB")
    title = f"Airflow {results.spec.airflow} scheduler memory under DAG-version churn".replace("  ", " ")
    if summary.main is not None:
        title += f" -- bytecache: {summary.main.outcome}"
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def write_all(results: SoakResults, out: Path) -> Summary:
    """Every report file from ``results``; returns the summary."""
    summary = analysis.summarize(results)
    write_csv(results, out)
    plot(results, summary, out / "rss.png")
    (out / "summary.md").write_text(render_markdown(results, summary))
    return summary
